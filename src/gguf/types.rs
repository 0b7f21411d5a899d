//! GGML tensor type ids and their block geometry, as stored in GGUF files.

#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ4_NL,
    IQ4_XS,
    BF16,
}

/// Every type this crate knows: (type, ggml id, name, elements per block, bytes per block).
pub const TYPE_TABLE: &[(GgmlType, u32, &str, usize, usize)] = &[
    (GgmlType::F32, 0, "f32", 1, 4),
    (GgmlType::F16, 1, "f16", 1, 2),
    (GgmlType::Q4_0, 2, "q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "q8_K", 256, 292),
    (GgmlType::IQ4_NL, 20, "iq4_nl", 32, 18),
    (GgmlType::IQ4_XS, 23, "iq4_xs", 256, 136),
    (GgmlType::BF16, 30, "bf16", 1, 2),
];

impl GgmlType {
    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        TYPE_TABLE.iter().find(|r| r.0 == self).expect("every variant is in TYPE_TABLE")
    }
    pub fn from_id(id: u32) -> Option<Self> {
        TYPE_TABLE.iter().find(|r| r.1 == id).map(|r| r.0)
    }
    pub fn id(self) -> u32 {
        self.row().1
    }
    pub fn name(self) -> &'static str {
        self.row().2
    }
    pub fn from_name(name: &str) -> Option<Self> {
        TYPE_TABLE.iter().find(|r| r.2.eq_ignore_ascii_case(name)).map(|r| r.0)
    }
    /// Elements per block.
    pub fn block_elems(self) -> usize {
        self.row().3
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.row().4
    }
    /// Bytes of a row of `n` elements, or None if `n` is not a multiple of the block size.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_elems()) {
            return None;
        }
        (n / self.block_elems()).checked_mul(self.block_bytes())
    }
}

/// Human name of a ggml type id, also for ids this crate cannot compute with.
pub fn type_id_name(id: u32) -> String {
    const OTHERS: &[(u32, &str)] = &[
        (16, "iq2_xxs"),
        (17, "iq2_xs"),
        (18, "iq3_xxs"),
        (19, "iq1_s"),
        (21, "iq3_s"),
        (22, "iq2_s"),
        (24, "i8"),
        (25, "i16"),
        (26, "i32"),
        (27, "i64"),
        (28, "f64"),
        (29, "iq1_m"),
        (34, "tq1_0"),
        (35, "tq2_0"),
        (39, "mxfp4"),
    ];
    if let Some(t) = GgmlType::from_id(id) {
        return t.name().to_string();
    }
    OTHERS.iter().find(|r| r.0 == id).map(|r| r.1.to_string()).unwrap_or_else(|| format!("type {id}"))
}
