//! GGUF container: metadata values, tensor types, a validating mmap reader and a writer.
mod reader;
mod types;
mod value;
mod writer;

pub use reader::{GgufFile, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC};
pub use types::{type_id_name, GgmlType, TYPE_TABLE};
pub use value::{Value, ValueType};
pub use writer::GgufWriter;
