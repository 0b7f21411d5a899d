//! llama-quantize's file types: names, numbers, descriptions, and the tensor
//! type each one defaults to.

use crate::gguf::GgmlType;

#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ftype {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
}

/// (name as llama-quantize lists it, ftype, llama_ftype number, description).
pub const OPTIONS: &[(&str, Ftype, u32, &str)] = &[
    ("Q4_0", Ftype::Q4_0, 2, " 4.34G, +0.4685 ppl @ Llama-3-8B"),
    ("Q4_1", Ftype::Q4_1, 3, " 4.78G, +0.4511 ppl @ Llama-3-8B"),
    ("Q5_0", Ftype::Q5_0, 8, " 5.21G, +0.1316 ppl @ Llama-3-8B"),
    ("Q5_1", Ftype::Q5_1, 9, " 5.65G, +0.1062 ppl @ Llama-3-8B"),
    ("Q2_K", Ftype::Q2_K, 10, " 2.96G, +3.5199 ppl @ Llama-3-8B"),
    ("Q3_K", Ftype::Q3_K_M, 12, "alias for Q3_K_M"),
    ("Q3_K_S", Ftype::Q3_K_S, 11, " 3.41G, +1.6321 ppl @ Llama-3-8B"),
    ("Q3_K_M", Ftype::Q3_K_M, 12, " 3.74G, +0.6569 ppl @ Llama-3-8B"),
    ("Q3_K_L", Ftype::Q3_K_L, 13, " 4.03G, +0.5562 ppl @ Llama-3-8B"),
    ("IQ4_NL", Ftype::IQ4_NL, 25, " 4.50 bpw non-linear quantization"),
    ("IQ4_XS", Ftype::IQ4_XS, 30, " 4.25 bpw non-linear quantization"),
    ("Q4_K", Ftype::Q4_K_M, 15, "alias for Q4_K_M"),
    ("Q4_K_S", Ftype::Q4_K_S, 14, " 4.37G, +0.2689 ppl @ Llama-3-8B"),
    ("Q4_K_M", Ftype::Q4_K_M, 15, " 4.58G, +0.1754 ppl @ Llama-3-8B"),
    ("Q5_K", Ftype::Q5_K_M, 17, "alias for Q5_K_M"),
    ("Q5_K_S", Ftype::Q5_K_S, 16, " 5.21G, +0.1049 ppl @ Llama-3-8B"),
    ("Q5_K_M", Ftype::Q5_K_M, 17, " 5.33G, +0.0569 ppl @ Llama-3-8B"),
    ("Q6_K", Ftype::Q6_K, 18, " 6.14G, +0.0217 ppl @ Llama-3-8B"),
    ("Q8_0", Ftype::Q8_0, 7, " 7.96G, +0.0026 ppl @ Llama-3-8B"),
    ("F16", Ftype::F16, 1, "14.00G, +0.0020 ppl @ Mistral-7B"),
    ("BF16", Ftype::BF16, 32, "14.00G, -0.0050 ppl @ Mistral-7B"),
    ("F32", Ftype::F32, 0, "26.00G              @ 7B"),
];

/// llama-quantize types rllama does not produce (they need an importance matrix or grids it lacks).
pub const UNSUPPORTED: &[&str] = &[
    "Q1_0",
    "Q2_0",
    "MXFP4_MOE",
    "IQ2_XXS",
    "IQ2_XS",
    "IQ2_S",
    "IQ2_M",
    "IQ1_S",
    "IQ1_M",
    "TQ1_0",
    "TQ2_0",
    "Q2_K_S",
    "IQ3_XXS",
    "IQ3_S",
    "IQ3_M",
    "IQ3_XS",
    "COPY",
];

impl Ftype {
    /// A name or number as llama-quantize accepts it: (ftype, canonical name).
    pub fn parse(s: &str) -> Option<(Ftype, &'static str)> {
        if let Some(o) = OPTIONS.iter().find(|o| o.0.eq_ignore_ascii_case(s)) {
            return Some((o.1, o.0));
        }
        let n: u32 = s.trim().parse().ok()?;
        OPTIONS.iter().find(|o| o.2 == n).map(|o| (o.1, o.0))
    }

    pub fn id(self) -> u32 {
        OPTIONS.iter().find(|o| o.1 == self).map(|o| o.2).expect("every ftype is listed")
    }

    pub fn default_type(self) -> GgmlType {
        use Ftype::*;
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q5_0 => GgmlType::Q5_0,
            Q5_1 => GgmlType::Q5_1,
            Q8_0 => GgmlType::Q8_0,
            Q2_K => GgmlType::Q2_K,
            Q3_K_S | Q3_K_M | Q3_K_L => GgmlType::Q3_K,
            Q4_K_S | Q4_K_M => GgmlType::Q4_K,
            Q5_K_S | Q5_K_M => GgmlType::Q5_K,
            Q6_K => GgmlType::Q6_K,
            IQ4_NL => GgmlType::IQ4_NL,
            IQ4_XS => GgmlType::IQ4_XS,
        }
    }
}
