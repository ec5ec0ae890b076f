//! Byte-level fixes of stored values: big-endian byte swaps, conjugation and negation, applied
//! to little-endian element buffers.

use crate::dtype::DType;

/// What must be done to stored bytes to get the logical little-endian values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transform {
    /// Reverse the bytes of every unit of this size (big-endian source).
    pub swap_unit: Option<u64>,
    /// Conjugate complex numbers (negate the imaginary part).
    pub conj: bool,
    /// Negate every value.
    pub neg: bool,
}

impl Transform {
    /// True when bytes can be copied as they are.
    pub fn is_identity(&self) -> bool {
        self.swap_unit.is_none() && !self.conj && !self.neg
    }
}

/// Whether `dtype` values can be negated bit-exactly by this tool, and how.
pub fn negation_supported(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F64
            | DType::F32
            | DType::F16
            | DType::BF16
            | DType::C64
            | DType::F8E4M3
            | DType::F8E5M2
            | DType::I64
            | DType::I32
            | DType::I16
            | DType::I8
    )
}

/// Applies `t` to little-endian-ordered (after swapping) elements of `dtype` in `buf`.
pub fn apply_transform(buf: &mut [u8], dtype: DType, t: &Transform) {
    if let Some(u) = t.swap_unit.filter(|u| *u > 1) {
        for unit in buf.chunks_exact_mut(u as usize) {
            unit.reverse();
        }
    }
    let size = dtype.itemsize() as usize;
    if t.conj && dtype == DType::C64 {
        // Flip the sign bit of the imaginary f32 (top byte of the second component).
        for el in buf.chunks_exact_mut(size) {
            el[7] ^= 0x80;
        }
    }
    if t.neg {
        match dtype {
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F8E5M2 => {
                for el in buf.chunks_exact_mut(size) {
                    el[size - 1] ^= 0x80;
                }
            }
            DType::C64 => {
                for el in buf.chunks_exact_mut(8) {
                    el[3] ^= 0x80;
                    el[7] ^= 0x80;
                }
            }
            DType::I64 | DType::I32 | DType::I16 | DType::I8 => {
                for el in buf.chunks_exact_mut(size) {
                    // Two's complement negation: invert, then add one.
                    let mut carry = true;
                    for b in el.iter_mut() {
                        let (v, c) = (!*b).overflowing_add(carry as u8);
                        *b = v;
                        carry = c;
                    }
                }
            }
            _ => {}
        }
    }
}
