//! GGUF (version 3) writer: metadata, tensor infos, aligned tensor data.

use super::types::GgmlType;
use super::value::{Value, ValueType};
use anyhow::{bail, Result};
use std::io::Write;

pub struct GgufWriter {
    pub alignment: u64,
    pub metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(t, items) => {
            out.extend_from_slice(&(*t as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                put_value(out, it);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter { alignment: 32, metadata: Vec::new(), tensors: Vec::new() }
    }

    pub fn set(&mut self, key: &str, v: Value) {
        if let Some(e) = self.metadata.iter_mut().find(|(k, _)| k == key) {
            e.1 = v;
        } else {
            self.metadata.push((key.to_string(), v));
        }
    }

    pub fn set_str(&mut self, key: &str, s: &str) {
        self.set(key, Value::String(s.to_string()));
    }

    pub fn set_str_array(&mut self, key: &str, items: &[&str]) {
        self.set(key, Value::Array(ValueType::String, items.iter().map(|s| Value::String(s.to_string())).collect()));
    }

    /// Add a tensor; `dims` in ggml order (row length first), `data` already in `ty`'s layout.
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Result<()> {
        let n: u64 = dims.iter().product();
        if dims.is_empty() || !dims[0].is_multiple_of(ty.block_elems() as u64) {
            bail!("tensor {name}: row length not a multiple of the {} block size", ty.name());
        }
        let want = n / ty.block_elems() as u64 * ty.block_bytes() as u64;
        if want != data.len() as u64 {
            bail!("tensor {name}: {} bytes of data for {want} expected", data.len());
        }
        self.tensors.push((name.to_string(), dims.to_vec(), ty, data));
        Ok(())
    }

    /// Header (magic, metadata, tensor infos) for tensors of these (name,
    /// dims, type, data bytes), padded to the alignment: the data follow, each
    /// tensor padded to the alignment. Lets large files be streamed.
    pub fn header(&self, tensors: &[(&str, &[u64], GgmlType, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        let mut md = self.metadata.clone();
        if self.alignment != 32 && !md.iter().any(|(k, _)| k == "general.alignment") {
            md.push(("general.alignment".into(), Value::U32(self.alignment as u32)));
        }
        out.extend_from_slice(&(md.len() as u64).to_le_bytes());
        for (k, v) in &md {
            put_str(&mut out, k);
            out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut out, v);
        }
        let a = self.alignment as usize;
        let mut off = 0usize;
        for (name, dims, ty, len) in tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims.iter() {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&(off as u64).to_le_bytes());
            off += len.div_ceil(a) * a;
        }
        out.resize(out.len().div_ceil(a) * a, 0);
        out
    }

    /// The whole file image.
    pub fn to_bytes(&self) -> Vec<u8> {
        let infos: Vec<(&str, &[u64], GgmlType, usize)> = self.tensors.iter().map(|(n, d, t, data)| (n.as_str(), d.as_slice(), *t, data.len())).collect();
        let mut out = self.header(&infos);
        let a = self.alignment as usize;
        for (_, _, _, data) in &self.tensors {
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(a) * a, 0);
        }
        out
    }

    /// Write to `path` through a temporary file and a rename, so a failure never
    /// leaves a half-written file behind.
    pub fn write_file(&self, path: &std::path::Path) -> Result<()> {
        let tmp = path.with_extension("tmp-rllama");
        let res = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&self.to_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            bail!("{}: cannot write: {e}", path.display());
        }
        Ok(())
    }
}
