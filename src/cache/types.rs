//! Plain data types that describe caches, keys and layer selections, shared by
//! the registry, the transfer planner and the wire protocol. No pointers, no I/O.

use crate::status::Result;
use crate::{bail, err};

/// Sentinel for an unset `req_id` / `prefix_id` (2^64 - 1).
pub const ID_UNSET: u64 = u64::MAX;

/// Tensor element type, with the GE numeric codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DataType {
    Float = 0,
    Float16 = 1,
    Int8 = 2,
    Int32 = 3,
    Uint8 = 4,
    Int16 = 6,
    Uint16 = 7,
    Uint32 = 8,
    Int64 = 9,
    Uint64 = 10,
    Double = 11,
    Bool = 12,
    String = 13,
    Bf16 = 27,
    Undefined = 28,
}

impl DataType {
    /// Parses a GE data-type code.
    pub fn from_code(code: u32) -> Result<DataType> {
        use DataType::*;
        Ok(match code {
            0 => Float,
            1 => Float16,
            2 => Int8,
            3 => Int32,
            4 => Uint8,
            6 => Int16,
            7 => Uint16,
            8 => Uint32,
            9 => Int64,
            10 => Uint64,
            11 => Double,
            12 => Bool,
            13 => String,
            27 => Bf16,
            28 => Undefined,
            _ => bail!(ParamInvalid, "data_type {code} is not a known data type code"),
        })
    }

    /// Bytes per element; `None` for `Undefined`.
    pub fn elem_size(self) -> Option<u64> {
        use DataType::*;
        Some(match self {
            Float | Int32 | Uint32 => 4,
            Float16 | Bf16 | Int16 | Uint16 => 2,
            Int8 | Uint8 | Bool => 1,
            Int64 | Uint64 | Double => 8,
            String => 16,
            Undefined => return None,
        })
    }
}

/// Where a cache's memory lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Placement {
    Host = 0,
    Device = 1,
}

impl Placement {
    /// Parses the documented numeric value.
    pub fn from_code(code: u32) -> Result<Placement> {
        match code {
            0 => Ok(Placement::Host),
            1 => Ok(Placement::Device),
            _ => bail!(ParamInvalid, "placement {code} is neither HOST (0) nor DEVICE (1)"),
        }
    }
}

/// Maximum number of dimensions of a cache shape.
pub const MAX_DIMS: usize = 31;

/// Description of a cache: `num_tensors` tensors of one shape and data type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheDesc {
    pub placement: Placement,
    pub num_tensors: u32,
    pub data_type: DataType,
    pub shape: Vec<i64>,
    /// Accepted and range-checked; transfers always use dim 0.
    pub batch_dim_index: i32,
    /// Accepted and range-checked (-1 = none); unused by transfers.
    pub seq_len_dim_index: i32,
}

impl CacheDesc {
    /// Checks the shape rules (1..=31 dims, each > 0, no overflow), a defined
    /// data type, at least one tensor, and the dim-index ranges. Returns the bytes
    /// per tensor.
    pub fn validate(&self) -> Result<u64> {
        if self.num_tensors == 0 {
            bail!(ParamInvalid, "cache_desc.num_tensors must be > 0");
        }
        let elem = self.data_type.elem_size().ok_or_else(|| {
            err!(ParamInvalid, "cache_desc.data_type must be defined (got DT_UNDEFINED)")
        })?;
        if self.shape.is_empty() || self.shape.len() > MAX_DIMS {
            bail!(
                ParamInvalid,
                "cache_desc.shape must have 1..={MAX_DIMS} dims (got {})",
                self.shape.len()
            );
        }
        let mut total = elem;
        for (i, &d) in self.shape.iter().enumerate() {
            if d <= 0 {
                bail!(ParamInvalid, "cache_desc.shape[{i}] = {d} must be > 0");
            }
            total = total
                .checked_mul(d as u64)
                .ok_or_else(|| err!(ParamInvalid, "cache_desc.shape overflows the tensor size"))?;
        }
        let rank = self.shape.len() as i32;
        if self.batch_dim_index < 0 || self.batch_dim_index >= rank {
            bail!(
                ParamInvalid,
                "cache_desc.batch_dim_index {} is outside [0, {rank})",
                self.batch_dim_index
            );
        }
        if self.seq_len_dim_index < -1 || self.seq_len_dim_index >= rank {
            bail!(
                ParamInvalid,
                "cache_desc.seq_len_dim_index {} must be -1 or in [0, {rank})",
                self.seq_len_dim_index
            );
        }
        Ok(total)
    }

    /// Bytes per tensor (`prod(shape) * elem`); call after `validate`.
    pub fn tensor_bytes(&self) -> u64 {
        let elem = self.data_type.elem_size().unwrap_or(1);
        self.shape.iter().fold(elem, |acc, &d| acc.saturating_mul(d.max(0) as u64))
    }
}

/// How a cache's dimension 0 is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CacheKind {
    /// Dimension 0 is the batch: slots of `S = T / B` bytes.
    Batch = 0,
    /// Dimension 0 is the block count (paged cache).
    Blocks = 1,
    /// Usable as both (C++ `RegisterKvCache`).
    Mixed = 2,
}

impl CacheKind {
    /// True if batch-slot operations are allowed.
    pub fn is_batch(self) -> bool {
        matches!(self, CacheKind::Batch | CacheKind::Mixed)
    }
    /// True if block operations are allowed.
    pub fn is_blocks(self) -> bool {
        matches!(self, CacheKind::Blocks | CacheKind::Mixed)
    }
    /// Parses the wire value.
    pub fn from_u8(v: u8) -> Option<CacheKind> {
        match v {
            0 => Some(CacheKind::Batch),
            1 => Some(CacheKind::Blocks),
            2 => Some(CacheKind::Mixed),
            _ => None,
        }
    }
}

/// The geometry of one cache as the planner sees it: where each tensor starts,
/// how big it is and how many slots/blocks dimension 0 has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheView {
    pub kind: CacheKind,
    /// Base address of each tensor (`num_tensors` entries).
    pub addrs: Vec<u64>,
    /// Bytes per tensor (`T`).
    pub tensor_bytes: u64,
    /// `shape[0]`: batch size `B` or block count `N`.
    pub dim0: u64,
}

impl CacheView {
    /// Number of tensors.
    pub fn num_tensors(&self) -> u32 {
        self.addrs.len() as u32
    }
    /// Bytes per slot / per block (`S = T / dim0`).
    pub fn stride(&self) -> u64 {
        self.tensor_bytes / self.dim0.max(1)
    }
}

/// How a peer names a cache (spec §1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// One batch slot bound by `(req_id | prefix_id, model_id)`.
    Req {
        cluster_id: u64,
        req_id: u64,
        model_id: u64,
        prefix_id: u64,
    },
    /// A cache by id, slot `batch_index`.
    IdIndex {
        cluster_id: u64,
        cache_id: i64,
        batch_index: u32,
    },
    /// The blocks cache bound to `model_id`.
    Blocks { cluster_id: u64, model_id: u64 },
}

impl CacheKey {
    /// The cluster that owns the named cache.
    pub fn cluster_id(&self) -> u64 {
        match *self {
            CacheKey::Req { cluster_id, .. }
            | CacheKey::IdIndex { cluster_id, .. }
            | CacheKey::Blocks { cluster_id, .. } => cluster_id,
        }
    }
}

/// Key under which a batch slot or blocks cache is bound in the owner's tables:
/// `(is_prefix, id, model_id)`. Blocks keys use `(false, ID_UNSET, model_id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindKey {
    pub is_prefix: bool,
    pub id: u64,
    pub model_id: u64,
}

impl BindKey {
    /// Binding key of a `CacheKey::Req` used for *binding* (register/allocate):
    /// prefix if `prefix_id` is set, else request. `None` for a placeholder
    /// (req_id unset and no prefix).
    pub fn for_binding(req_id: u64, prefix_id: u64, model_id: u64) -> Option<BindKey> {
        if prefix_id != ID_UNSET {
            Some(BindKey {
                is_prefix: true,
                id: prefix_id,
                model_id,
            })
        } else if req_id != ID_UNSET {
            Some(BindKey {
                is_prefix: false,
                id: req_id,
                model_id,
            })
        } else {
            None
        }
    }

    /// Binding key for a lookup (pull): exactly one of req_id / prefix_id set.
    pub fn for_lookup(req_id: u64, prefix_id: u64, model_id: u64) -> Result<BindKey> {
        match (req_id != ID_UNSET, prefix_id != ID_UNSET) {
            (true, false) => Ok(BindKey {
                is_prefix: false,
                id: req_id,
                model_id,
            }),
            (false, true) => Ok(BindKey {
                is_prefix: true,
                id: prefix_id,
                model_id,
            }),
            _ => bail!(
                ParamInvalid,
                "cache key must set exactly one of req_id and prefix_id (req_id={req_id}, prefix_id={prefix_id})"
            ),
        }
    }

    /// The blocks-cache binding of `model_id`.
    pub fn blocks(model_id: u64) -> BindKey {
        BindKey {
            is_prefix: false,
            id: ID_UNSET,
            model_id,
        }
    }
}

/// Layer selection (spec §1.6, §9 item 14): half-open ranges, `None` = all layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSel {
    pub src: Option<(u32, u32)>,
    pub dst: Option<(u32, u32)>,
    /// Tensors per layer (default 2).
    pub per_layer: u32,
}

impl Default for LayerSel {
    fn default() -> Self {
        LayerSel {
            src: None,
            dst: None,
            per_layer: 2,
        }
    }
}

/// One contiguous copy: `len` bytes from `src` to `dst`. Which side is remote
/// depends on the operation (pull: src remote; push: dst remote).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Segment {
    pub dst: u64,
    pub src: u64,
    pub len: u64,
}
