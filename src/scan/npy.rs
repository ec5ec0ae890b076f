//! NumPy `.npy` arrays (alone or as `.npz` members) and the file formats the scan recognises
//! by their first bytes without being able to look inside.

/// What an `.npy` header says.
pub(super) struct NpyHeader {
    /// The dtype holds Python objects: the data after the header is a pickle.
    pub object: bool,
    /// Where the data starts.
    pub data_start: usize,
}

/// The `.npy` magic.
pub(super) const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Parses an `.npy` header (format versions 1 to 3). `Err` says what is malformed.
pub(super) fn npy_header(b: &[u8]) -> Result<NpyHeader, String> {
    if !b.starts_with(NPY_MAGIC) || b.len() < 10 {
        return Err("not an .npy header".into());
    }
    let (len, start): (usize, usize) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!(".npy format version {v}, which numpy never wrote")),
    };
    let end = start
        .checked_add(len)
        .filter(|e| *e <= b.len())
        .ok_or_else(|| format!("the .npy header declares {len} bytes past the end of the file"))?;
    let text = std::str::from_utf8(&b[start..end])
        .map_err(|_| "the .npy header is not text".to_string())?;
    let t = text.trim_end_matches([' ', '\n', '\0']).trim();
    if !(t.starts_with('{') && t.ends_with('}') && t.contains("'descr'") && t.contains("'shape'")) {
        return Err("the .npy header is not a dict with 'descr' and 'shape'".into());
    }
    // The dtype: `'descr': '<f4'` or a list of fields `[('a', '<f4'), ('b', '|O')]`. Any quoted
    // string that is an object type code makes the data a pickle.
    let descr = t.split_once("'descr'").map(|(_, rest)| rest).unwrap_or("");
    let descr = descr
        .split_once("'fortran_order'")
        .map(|(d, _)| d)
        .or_else(|| descr.split_once("'shape'").map(|(d, _)| d))
        .unwrap_or(descr);
    let object = descr.split('\'').skip(1).step_by(2).any(|s| {
        let s = s.trim_start_matches(['|', '<', '>', '=']);
        s.starts_with('O') && s[1..].chars().all(|c| c.is_ascii_digit())
    });
    Ok(NpyHeader {
        object,
        data_start: end,
    })
}

/// A format the scan recognises by its magic bytes but does not open, and its name.
pub(super) fn opaque_format(head: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
        (b"Rar!\x1a\x07", "a RAR archive"),
        (b"BZh", "a bzip2-compressed file"),
        (b"\xfd7zXZ\x00", "an xz-compressed file"),
        (b"\x28\xb5\x2f\xfd", "a zstd-compressed file"),
        (b"\x04\x22\x4d\x18", "an LZ4-compressed file"),
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"%PDF", "a PDF document"),
        (b"\x7fELF", "an ELF executable"),
        (b"MZ", "a Windows executable"),
        (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras/h5py)"),
        (b"\xca\xfe\xba\xbe", "a Mach-O or Java class file"),
        (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    ];
    MAGICS
        .iter()
        .find(|(m, _)| head.starts_with(m))
        .map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str) -> Vec<u8> {
        let h = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (2,), }}\n");
        let mut b = NPY_MAGIC.to_vec();
        b.extend([1, 0]);
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        b
    }

    #[test]
    fn object_dtypes_are_told_apart_from_numeric_ones() {
        assert!(!npy_header(&npy("'<f4'")).unwrap().object);
        assert!(!npy_header(&npy("[('Oscar', '<i8')]")).unwrap().object);
        assert!(npy_header(&npy("'|O'")).unwrap().object);
        assert!(
            npy_header(&npy("[('a', '<f4'), ('b', '|O')]"))
                .unwrap()
                .object
        );
        assert!(npy_header(b"\x93NUMPY\x01\x00\xff\xff{").is_err());
        assert!(npy_header(b"\x93NUMPY\x09\x00\x00\x00").is_err());
    }

    #[test]
    fn opaque_formats_are_named() {
        assert_eq!(
            opaque_format(b"7z\xbc\xaf\x27\x1c\x00"),
            Some("a 7z archive")
        );
        assert_eq!(opaque_format(b"\x80\x02}q"), None);
    }
}
