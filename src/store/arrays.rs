//! Named one-dimensional arrays of numbers in one safetensors file: the partial state a shard of a
//! stage writes (sums, counts, top-k lists) and the stage's merge reads back, every value stored
//! exactly (f64 as f64, i128 as two little-endian words).

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::Path;

/// Arrays being collected for one file.
#[derive(Default)]
pub struct Arrays {
    arrays: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
}

/// A number type an array may hold.
pub trait Element: Copy {
    const DTYPE: Dtype;
    /// Bytes of one element.
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: Dtype = Dtype::$d;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("element size"))
            }
        }
    };
}
element!(f64, F64);
element!(f32, F32);
element!(u64, U64);
element!(u32, U32);
element!(u8, U8);
element!(i64, I64);

impl Arrays {
    pub fn new() -> Arrays {
        Arrays::default()
    }

    /// Add an array (replacing one of the same name).
    pub fn put<T: Element>(&mut self, name: &str, values: &[T]) -> &mut Arrays {
        self.put_iter(name, values.iter().copied())
    }

    /// Add an array from its values one by one.
    pub fn put_iter<T: Element>(&mut self, name: &str, values: impl Iterator<Item = T>) -> &mut Arrays {
        let mut bytes = Vec::with_capacity(values.size_hint().0 * T::SIZE);
        values.for_each(|v| v.put(&mut bytes));
        let len = bytes.len() / T::SIZE;
        self.arrays.insert(name.to_string(), (T::DTYPE, vec![len], bytes));
        self
    }

    /// Add an array of i128 (stored as [n, 2] i64: low word, high word).
    pub fn put_i128(&mut self, name: &str, values: &[i128]) -> &mut Arrays {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.arrays.insert(name.to_string(), (Dtype::I64, vec![values.len(), 2], bytes));
        self
    }

    /// Write the arrays into `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let views = self
            .arrays
            .iter()
            .map(|(n, (d, s, b))| Ok((n.as_str(), TensorView::new(*d, s.clone(), b).map_err(|e| anyhow!("{n}: {e}"))?)))
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize_to_file(views, None, path).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// An arrays file read back (memory-mapped).
pub struct ArraysFile {
    file: super::tensor_file::TensorFile,
    path: std::path::PathBuf,
}

impl ArraysFile {
    pub fn open(path: &Path) -> Result<ArraysFile> {
        Ok(ArraysFile { file: super::tensor_file::TensorFile::open(path)?, path: path.to_path_buf() })
    }

    /// Whether the file holds an array of this name.
    pub fn has(&self, name: &str) -> bool {
        self.file.get_typed(name).is_ok()
    }

    /// The names of its arrays.
    pub fn names(&self) -> Result<Vec<String>> {
        self.file.names()
    }

    fn raw(&self, name: &str, dtype: Dtype) -> Result<(Vec<usize>, &[u8])> {
        let (d, shape, bytes) =
            self.file.get_typed(name).with_context(|| format!("{}: no array '{name}'", self.path.display()))?;
        if d != dtype {
            bail!("{}: array '{name}' holds {d:?}, expected {dtype:?}", self.path.display());
        }
        Ok((shape, bytes))
    }

    pub fn get<T: Element>(&self, name: &str) -> Result<Vec<T>> {
        let (_, bytes) = self.raw(name, T::DTYPE)?;
        Ok(bytes.chunks_exact(T::SIZE).map(T::get).collect())
    }

    pub fn get_i128(&self, name: &str) -> Result<Vec<i128>> {
        let (shape, bytes) = self.raw(name, Dtype::I64)?;
        if shape.len() != 2 || shape[1] != 2 {
            bail!("{}: array '{name}' is not i128 (shape {shape:?})", self.path.display());
        }
        Ok(bytes.chunks_exact(16).map(|c| i128::from_le_bytes(c.try_into().expect("16 bytes"))).collect())
    }

    /// A single number.
    pub fn scalar<T: Element>(&self, name: &str) -> Result<T> {
        let v = self.get::<T>(name)?;
        match v[..] {
            [x] => Ok(x),
            _ => bail!("{}: array '{name}' has {} values, expected one", self.path.display(), v.len()),
        }
    }
}
