//! SIMD twins of the scalar kernels, chosen once at start-up by runtime
//! feature detection. Every twin is tested against its scalar reference
//! (tests/quant_simd.rs).

use super::TypeKernels;

#[cfg(target_arch = "x86_64")]
#[path = "avx2.rs"]
pub mod avx2;

/// Whether the AVX2 (+FMA, F16C) kernels can run here.
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::env::var_os("RLLAMA_NO_SIMD").is_none()
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether 16-lane float loops (AVX-512F on top of the AVX2 set) can run here.
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| has_avx2() && std::env::var_os("RLLAMA_NO_AVX512").is_none() && is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Replace scalar kernels by the fastest SIMD twins this CPU supports.
pub fn upgrade(k: &mut TypeKernels) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        if let Some(f) = avx2::vec_dot_for(k.ty) {
            k.vec_dot = f;
            k.batch = avx2::batch_dot_for(k.ty);
            k.gemm = avx2::gemm_for(k.ty);
            k.gemm_packed = avx2::gemm_packed_for(k.ty);
        }
        if let Some(f) = avx2::quantize_for(k.act) {
            k.quantize_act = f;
        }
    }
    let _ = k;
}

/// The multi-row kernels this CPU can run for a type, over plain or packed
/// rows, by name (tests compare each with `dot_for`).
pub fn gemm_variants(ty: crate::gguf::GgmlType, packed: bool) -> Vec<(&'static str, super::GemmFn)> {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        return avx2::gemm_variants(ty, packed);
    }
    let _ = (ty, packed);
    Vec::new()
}
