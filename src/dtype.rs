//! The one dtype table: torch names, storage class names (Python and C++ spellings), element
//! sizes and the safetensors dtype each maps to. Every layer asks this table.

use safetensors::Dtype as StDtype;

/// A torch element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    C64,
    C128,
    C32,
    BC32,
    F8E4M3,
    F8E5M2,
    F8E4M3Fnuz,
    F8E5M2Fnuz,
    F8E8M0,
    F4x2,
    U16,
    U32,
    U64,
    QInt8,
    QUInt8,
    QInt32,
    QUInt4x2,
    QUInt2x4,
    Bits8,
    Bits16,
    Bits1x8,
    Bits2x4,
    Bits4x2,
}

/// What the table knows of one dtype.
#[derive(Debug)]
pub struct DTypeInfo {
    /// The dtype.
    pub dtype: DType,
    /// torch's canonical name (`torch.<name>`).
    pub torch: &'static str,
    /// The Python typed-storage class (`torch.<X>`), if torch.save uses one.
    pub py_storage: Option<&'static str>,
    /// The C++ / TorchScript storage class (`toString(ScalarType) + "Storage"`).
    pub cpp_storage: &'static str,
    /// Bytes per element.
    pub itemsize: u64,
    /// Size of the unit to byte-swap (complex numbers swap each component).
    pub swap_unit: u64,
    /// The safetensors dtype, if safetensors can hold it.
    pub safetensors: Option<StDtype>,
}

macro_rules! table {
    ($( $d:ident, $torch:literal, $py:expr, $cpp:literal, $size:literal, $swap:literal, $st:expr; )*) => {
        /// Every dtype torch can save.
        pub static DTYPES: &[DTypeInfo] = &[
            $( DTypeInfo { dtype: DType::$d, torch: $torch, py_storage: $py, cpp_storage: $cpp,
                           itemsize: $size, swap_unit: $swap, safetensors: $st }, )*
        ];
    };
}

table! {
    F64, "float64", Some("DoubleStorage"), "DoubleStorage", 8, 8, Some(StDtype::F64);
    F32, "float32", Some("FloatStorage"), "FloatStorage", 4, 4, Some(StDtype::F32);
    F16, "float16", Some("HalfStorage"), "HalfStorage", 2, 2, Some(StDtype::F16);
    BF16, "bfloat16", Some("BFloat16Storage"), "BFloat16Storage", 2, 2, Some(StDtype::BF16);
    I64, "int64", Some("LongStorage"), "LongStorage", 8, 8, Some(StDtype::I64);
    I32, "int32", Some("IntStorage"), "IntStorage", 4, 4, Some(StDtype::I32);
    I16, "int16", Some("ShortStorage"), "ShortStorage", 2, 2, Some(StDtype::I16);
    I8, "int8", Some("CharStorage"), "CharStorage", 1, 1, Some(StDtype::I8);
    U8, "uint8", Some("ByteStorage"), "ByteStorage", 1, 1, Some(StDtype::U8);
    Bool, "bool", Some("BoolStorage"), "BoolStorage", 1, 1, Some(StDtype::BOOL);
    C64, "complex64", Some("ComplexFloatStorage"), "ComplexFloatStorage", 8, 4, Some(StDtype::C64);
    C128, "complex128", Some("ComplexDoubleStorage"), "ComplexDoubleStorage", 16, 8, None;
    C32, "complex32", None, "ComplexHalfStorage", 4, 2, None;
    BC32, "bcomplex32", None, "BComplex32Storage", 4, 2, None;
    F8E4M3, "float8_e4m3fn", None, "Float8_e4m3fnStorage", 1, 1, Some(StDtype::F8_E4M3);
    F8E5M2, "float8_e5m2", None, "Float8_e5m2Storage", 1, 1, Some(StDtype::F8_E5M2);
    F8E4M3Fnuz, "float8_e4m3fnuz", None, "Float8_e4m3fnuzStorage", 1, 1, Some(StDtype::F8_E4M3FNUZ);
    F8E5M2Fnuz, "float8_e5m2fnuz", None, "Float8_e5m2fnuzStorage", 1, 1, Some(StDtype::F8_E5M2FNUZ);
    F8E8M0, "float8_e8m0fnu", None, "Float8_e8m0fnuStorage", 1, 1, Some(StDtype::F8_E8M0);
    F4x2, "float4_e2m1fn_x2", None, "Float4_e2m1fn_x2Storage", 1, 1, None;
    U16, "uint16", None, "UInt16Storage", 2, 2, Some(StDtype::U16);
    U32, "uint32", None, "UInt32Storage", 4, 4, Some(StDtype::U32);
    U64, "uint64", None, "UInt64Storage", 8, 8, Some(StDtype::U64);
    QInt8, "qint8", Some("QInt8Storage"), "QInt8Storage", 1, 1, None;
    QUInt8, "quint8", Some("QUInt8Storage"), "QUInt8Storage", 1, 1, None;
    QInt32, "qint32", Some("QInt32Storage"), "QInt32Storage", 4, 4, None;
    QUInt4x2, "quint4x2", Some("QUInt4x2Storage"), "QUInt4x2Storage", 1, 1, None;
    QUInt2x4, "quint2x4", Some("QUInt2x4Storage"), "QUInt2x4Storage", 1, 1, None;
    Bits8, "bits8", None, "Bits8Storage", 1, 1, None;
    Bits16, "bits16", None, "Bits16Storage", 2, 2, None;
    Bits1x8, "bits1x8", None, "Bits1x8Storage", 1, 1, None;
    Bits2x4, "bits2x4", None, "Bits2x4Storage", 1, 1, None;
    Bits4x2, "bits4x2", None, "Bits4x2Storage", 1, 1, None;
}

impl DType {
    /// This dtype's row of the table.
    pub fn info(self) -> &'static DTypeInfo {
        // The table lists every variant exactly once (checked by a unit test).
        DTYPES
            .iter()
            .find(|i| i.dtype == self)
            .unwrap_or(&DTYPES[0])
    }

    /// Bytes per element.
    pub fn itemsize(self) -> u64 {
        self.info().itemsize
    }

    /// torch's name, e.g. `float32`.
    pub fn name(self) -> &'static str {
        self.info().torch
    }

    /// Looks up `torch.<name>` dtype globals.
    pub fn from_torch_name(name: &str) -> Option<DType> {
        DTYPES.iter().find(|i| i.torch == name).map(|i| i.dtype)
    }

    /// Looks up a storage class name in either spelling (`FloatStorage`, `UInt16Storage`).
    pub fn from_storage_name(name: &str) -> Option<DType> {
        DTYPES
            .iter()
            .find(|i| i.py_storage == Some(name) || i.cpp_storage == name)
            .map(|i| i.dtype)
    }

    /// Looks up a legacy tensor class name (`FloatTensor`, `cuda.HalfTensor`'s `HalfTensor`):
    /// the Python storage class of the same stem.
    pub fn from_tensor_type_name(name: &str) -> Option<DType> {
        let stem = name.strip_suffix("Tensor").filter(|s| !s.is_empty())?;
        DTYPES
            .iter()
            .find(|i| i.py_storage.and_then(|p| p.strip_suffix("Storage")) == Some(stem))
            .map(|i| i.dtype)
    }

    /// Why safetensors cannot hold this dtype, if it cannot.
    pub fn refusal(self) -> Option<&'static str> {
        match self {
            DType::C128 => Some("safetensors has no complex128 type (only C64)"),
            DType::C32 | DType::BC32 => Some("safetensors has no 32-bit complex type"),
            DType::F4x2 => Some("packed float4 is not supported yet"),
            DType::QInt8 | DType::QUInt8 | DType::QInt32 | DType::QUInt4x2 | DType::QUInt2x4 => {
                Some("quantized tensors have no safetensors type")
            }
            DType::Bits8 | DType::Bits16 | DType::Bits1x8 | DType::Bits2x4 | DType::Bits4x2 => {
                Some("bits dtypes have no safetensors type")
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_tensor_type_names() {
        assert_eq!(
            DType::from_tensor_type_name("FloatTensor"),
            Some(DType::F32)
        );
        assert_eq!(DType::from_tensor_type_name("LongTensor"), Some(DType::I64));
        assert_eq!(DType::from_tensor_type_name("ByteTensor"), Some(DType::U8));
        assert_eq!(DType::from_tensor_type_name("Tensor"), None);
        assert_eq!(DType::from_tensor_type_name("FloatStorage"), None);
    }

    #[test]
    fn every_row_is_found_by_its_own_dtype_and_names() {
        for row in DTYPES {
            assert_eq!(row.dtype.info().torch, row.torch);
            assert_eq!(DType::from_torch_name(row.torch), Some(row.dtype));
            assert_eq!(DType::from_storage_name(row.cpp_storage), Some(row.dtype));
            if let Some(py) = row.py_storage {
                assert_eq!(DType::from_storage_name(py), Some(row.dtype));
            }
            assert_eq!(
                row.safetensors.is_some(),
                row.dtype.refusal().is_none(),
                "{}",
                row.torch
            );
            if let Some(py) = row.py_storage {
                let tensor = py.replace("Storage", "Tensor");
                assert_eq!(DType::from_tensor_type_name(&tensor), Some(row.dtype));
            }
            if let Some(st) = row.safetensors {
                assert_eq!(st.bitsize() as u64, row.itemsize * 8, "{}", row.torch);
            }
        }
    }
}
