//! Plain data types that describe caches, keys and layer selections, shared by
//! the registry, the transfer planner and the wire protocol. No pointers, no I/O.

use crate::status::Result;
use crate::{bail, err};

/// Sentinel for an unset `req_id` / `prefix_id` (2^64 - 1).
pub const ID_UNSET: u64 = u64::MAX;

/// The hasher of maps keyed by integer ids looked up on every transfer (a
/// cache id, a remote cluster id): SplitMix64's finalizer, a few multiplies,
/// where SipHash costs more than the rest of the lookup. It is not keyed:
/// use it only for maps whose size the instance itself bounds (its caches,
/// its links), so that ids a peer picks to collide cost at most a scan of
/// that bound.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // The first write keeps the value as it is (one id: `finish` mixes it).
        self.0 = self.0.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ n;
    }
}

/// A `HashMap` keyed by integer ids, with [`IdHasher`].
pub type IdMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Tensor element type, with the GE numeric codes (`ge::DataType`, metadef
/// `graph/types.h`): every code CANN defines except the reserved 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DataType {
    /// `DT_FLOAT`: 32-bit IEEE float.
    Float = 0,
    /// `DT_FLOAT16`: 16-bit IEEE half float.
    Float16 = 1,
    /// `DT_INT8`: signed 8-bit integer.
    Int8 = 2,
    /// `DT_INT32`: signed 32-bit integer.
    Int32 = 3,
    /// `DT_UINT8`: unsigned 8-bit integer.
    Uint8 = 4,
    /// `DT_INT16`: signed 16-bit integer.
    Int16 = 6,
    /// `DT_UINT16`: unsigned 16-bit integer.
    Uint16 = 7,
    /// `DT_UINT32`: unsigned 32-bit integer.
    Uint32 = 8,
    /// `DT_INT64`: signed 64-bit integer.
    Int64 = 9,
    /// `DT_UINT64`: unsigned 64-bit integer.
    Uint64 = 10,
    /// `DT_DOUBLE`: 64-bit IEEE float.
    Double = 11,
    /// `DT_BOOL`: boolean, one byte.
    Bool = 12,
    /// `DT_STRING`: string, sized as a 16-byte head.
    String = 13,
    /// `DT_DUAL_SUB_INT8`: dual-output signed 8-bit (one byte).
    DualSubInt8 = 14,
    /// `DT_DUAL_SUB_UINT8`: dual-output unsigned 8-bit (one byte).
    DualSubUint8 = 15,
    /// `DT_COMPLEX64`: complex of two 32-bit floats.
    Complex64 = 16,
    /// `DT_COMPLEX128`: complex of two 64-bit floats.
    Complex128 = 17,
    /// `DT_QINT8`: quantized signed 8-bit.
    Qint8 = 18,
    /// `DT_QINT16`: quantized signed 16-bit.
    Qint16 = 19,
    /// `DT_QINT32`: quantized signed 32-bit.
    Qint32 = 20,
    /// `DT_QUINT8`: quantized unsigned 8-bit.
    Quint8 = 21,
    /// `DT_QUINT16`: quantized unsigned 16-bit.
    Quint16 = 22,
    /// `DT_RESOURCE`: resource handle, 8 bytes.
    Resource = 23,
    /// `DT_STRING_REF`: string reference, sized as a 16-byte head.
    StringRef = 24,
    /// `DT_DUAL`: dual-output type, 5 bytes.
    Dual = 25,
    /// `DT_VARIANT`: variant handle, 8 bytes.
    Variant = 26,
    /// `DT_BF16`: 16-bit brain float.
    Bf16 = 27,
    /// `DT_UNDEFINED`: no type; has no size and is rejected by [`CacheDesc::validate`].
    Undefined = 28,
    /// `DT_INT4`: signed 4-bit integer (packed).
    Int4 = 29,
    /// `DT_UINT1`: 1-bit unsigned integer (packed).
    Uint1 = 30,
    /// `DT_INT2`: signed 2-bit integer (packed).
    Int2 = 31,
    /// `DT_UINT2`: unsigned 2-bit integer (packed).
    Uint2 = 32,
    /// `DT_COMPLEX32`: complex of two 16-bit floats.
    Complex32 = 33,
    /// `DT_HIFLOAT8`: Huawei 8-bit float.
    HiFloat8 = 34,
    /// `DT_FLOAT8_E5M2`: 8-bit float, 5 exponent and 2 mantissa bits.
    Float8E5M2 = 35,
    /// `DT_FLOAT8_E4M3FN`: 8-bit float, 4 exponent and 3 mantissa bits, finite only.
    Float8E4M3FN = 36,
    /// `DT_FLOAT8_E8M0`: 8-bit power-of-two scale (8 exponent bits, no mantissa).
    Float8E8M0 = 37,
    /// `DT_FLOAT6_E3M2`: 6-bit float, 3 exponent and 2 mantissa bits (packed).
    Float6E3M2 = 38,
    /// `DT_FLOAT6_E2M3`: 6-bit float, 2 exponent and 3 mantissa bits (packed).
    Float6E2M3 = 39,
    /// `DT_FLOAT4_E2M1`: 4-bit float, 2 exponent bits and 1 mantissa bit (packed).
    Float4E2M1 = 40,
    /// `DT_FLOAT4_E1M2`: 4-bit float, 1 exponent bit and 2 mantissa bits (packed).
    Float4E1M2 = 41,
    /// `DT_HIFLOAT4`: Huawei 4-bit float (packed).
    HiFloat4 = 42,
}

impl DataType {
    /// Every defined type, in code order.
    pub const ALL: [DataType; 42] = {
        use DataType::*;
        [
            Float,
            Float16,
            Int8,
            Int32,
            Uint8,
            Int16,
            Uint16,
            Uint32,
            Int64,
            Uint64,
            Double,
            Bool,
            String,
            DualSubInt8,
            DualSubUint8,
            Complex64,
            Complex128,
            Qint8,
            Qint16,
            Qint32,
            Quint8,
            Quint16,
            Resource,
            StringRef,
            Dual,
            Variant,
            Bf16,
            Undefined,
            Int4,
            Uint1,
            Int2,
            Uint2,
            Complex32,
            HiFloat8,
            Float8E5M2,
            Float8E4M3FN,
            Float8E8M0,
            Float6E3M2,
            Float6E2M3,
            Float4E2M1,
            Float4E1M2,
            HiFloat4,
        ]
    };

    /// Parses a GE data-type code.
    pub fn from_code(code: u32) -> Result<DataType> {
        match DataType::ALL.iter().find(|d| **d as u32 == code) {
            Some(&d) => Ok(d),
            None => bail!(
                ParamInvalid,
                "data_type {code} is not a known data type code"
            ),
        }
    }

    /// Bits per element, as the reference sizes them (`GetSizeByDataType`,
    /// with strings as 16-byte heads like `LLMUtils::GetDataTypeLength`);
    /// `None` for `Undefined`. Sub-byte types (INT4, FP4, FP6, UINT1, INT2…)
    /// are packed: a tensor of them must hold a whole number of bytes per
    /// dim-0 row.
    pub fn elem_bits(self) -> Option<u64> {
        use DataType::*;
        let bytes = match self {
            Uint1 => return Some(1),
            Int2 | Uint2 => return Some(2),
            Int4 | Float4E2M1 | Float4E1M2 | HiFloat4 => return Some(4),
            Float6E3M2 | Float6E2M3 => return Some(6),
            Undefined => return None,
            Int8 | Uint8 | Bool | DualSubInt8 | DualSubUint8 | Qint8 | Quint8 | HiFloat8
            | Float8E5M2 | Float8E4M3FN | Float8E8M0 => 1,
            Float16 | Bf16 | Int16 | Uint16 | Qint16 | Quint16 => 2,
            Float | Int32 | Uint32 | Qint32 | Complex32 => 4,
            Dual => 5,
            Int64 | Uint64 | Double | Complex64 | Resource | Variant => 8,
            Complex128 | String | StringRef => 16,
        };
        Some(bytes * 8)
    }
}

/// Where a cache's memory lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Placement {
    /// Host memory (C `LLMDD_PLACEMENT_HOST`).
    Host = 0,
    /// Device memory (C `LLMDD_PLACEMENT_DEVICE`).
    Device = 1,
}

impl Placement {
    /// Parses the documented numeric value.
    pub fn from_code(code: u32) -> Result<Placement> {
        match code {
            0 => Ok(Placement::Host),
            1 => Ok(Placement::Device),
            _ => bail!(
                ParamInvalid,
                "placement {code} is neither HOST (0) nor DEVICE (1)"
            ),
        }
    }
}

/// Maximum number of dimensions of a cache shape.
pub const MAX_DIMS: usize = 31;

/// Description of a cache: `num_tensors` tensors of one shape and data type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheDesc {
    /// Where the tensors' memory lives.
    pub placement: Placement,
    /// Number of tensors (> 0).
    pub num_tensors: u32,
    /// Element type of every tensor.
    pub data_type: DataType,
    /// Dimensions (1..=31, each > 0); dim 0 is the batch size or block count.
    pub shape: Vec<i64>,
    /// Accepted and range-checked; transfers always use dim 0.
    pub batch_dim_index: i32,
    /// Accepted and range-checked (-1 = none); unused by transfers.
    pub seq_len_dim_index: i32,
}

impl CacheDesc {
    /// Checks the shape rules (1..=31 dims, each > 0, no overflow), a defined
    /// data type, whole bytes per dim-0 row (sub-byte types), at least one
    /// tensor, and the dim-index ranges. Returns the bytes per tensor.
    pub fn validate(&self) -> Result<u64> {
        if self.num_tensors == 0 {
            bail!(ParamInvalid, "cache_desc.num_tensors must be > 0");
        }
        let bits = self.data_type.elem_bits().ok_or_else(|| {
            err!(
                ParamInvalid,
                "cache_desc.data_type must be defined (got DT_UNDEFINED)"
            )
        })?;
        if self.shape.is_empty() || self.shape.len() > MAX_DIMS {
            bail!(
                ParamInvalid,
                "cache_desc.shape must have 1..={MAX_DIMS} dims (got {})",
                self.shape.len()
            );
        }
        // Bits of one dim-0 row (a batch slot or a block), then of the tensor.
        let mut row = bits;
        for (i, &d) in self.shape.iter().enumerate() {
            if d <= 0 {
                bail!(ParamInvalid, "cache_desc.shape[{i}] = {d} must be > 0");
            }
            if i > 0 {
                row = row.checked_mul(d as u64).ok_or_else(|| {
                    err!(ParamInvalid, "cache_desc.shape overflows the tensor size")
                })?;
            }
        }
        if row % 8 != 0 {
            bail!(
                ParamInvalid,
                "cache_desc: one shape[0] row of {:?} is {row} bits, not a whole number of bytes (sub-byte types need rows of whole bytes)",
                self.data_type
            );
        }
        let total = (row / 8)
            .checked_mul(self.shape[0] as u64)
            .ok_or_else(|| err!(ParamInvalid, "cache_desc.shape overflows the tensor size"))?;
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

    /// Bytes per tensor (`shape[0]` rows of `prod(shape[1..]) * bits / 8`
    /// bytes, as `validate` computes it); call after `validate`.
    pub fn tensor_bytes(&self) -> u64 {
        let bits = self.data_type.elem_bits().unwrap_or(8);
        let row = self
            .shape
            .iter()
            .skip(1)
            .fold(bits, |acc, &d| acc.saturating_mul(d.max(0) as u64));
        let dim0 = self.shape.first().map_or(0, |&d| d.max(0) as u64);
        (row / 8).saturating_mul(dim0)
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
    /// Whether dim 0 counts batch slots, blocks or both.
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
        /// Cluster that owns the cache.
        cluster_id: u64,
        /// Request id, or [`ID_UNSET`] when `prefix_id` names the slot.
        req_id: u64,
        /// Model id the slot is bound under.
        model_id: u64,
        /// Prefix id, or [`ID_UNSET`] when `req_id` names the slot.
        prefix_id: u64,
    },
    /// A cache by id, slot `batch_index`.
    IdIndex {
        /// Cluster that owns the cache.
        cluster_id: u64,
        /// Cache id, as register/allocate returned it on the owner.
        cache_id: i64,
        /// Batch slot within the cache (< dim 0).
        batch_index: u32,
    },
    /// The blocks cache bound to `model_id`.
    Blocks {
        /// Cluster that owns the cache.
        cluster_id: u64,
        /// Model id the blocks cache is bound to.
        model_id: u64,
    },
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
    /// True if `id` is a prefix id, false for a request id.
    pub is_prefix: bool,
    /// The request or prefix id ([`ID_UNSET`] for a blocks binding).
    pub id: u64,
    /// Model id of the binding.
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
    /// Source layers `[begin, end)`, `None` = all.
    pub src: Option<(u32, u32)>,
    /// Destination layers `[begin, end)`, `None` = all.
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
    /// Destination address (bytes).
    pub dst: u64,
    /// Source address (bytes).
    pub src: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Direction of a transfer relative to this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Remote `src` → local `dst`.
    Read,
    /// Local `src` → remote `dst`.
    Write,
}

// ---------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------

/// Segments whose local side lies in memory this process registered (a
/// cache's tensors, or ranges checked against registered memory), valid for
/// the copy's direction while the caller holds what keeps that memory
/// registered. Made only by the planners of this module (as a [`PlanBuf`]),
/// by [`Plan::assume_checked`], or as a part of another plan.
/// (Defined here, in the leaf vocabulary, so the byte movers below the API
/// layer can name it; its safe constructor is private to `crate::cache`.)
#[repr(transparent)]
#[derive(Debug, PartialEq, Eq)]
pub struct Plan([Segment]);

impl Plan {
    fn of(segs: &[Segment]) -> &Plan {
        // SAFETY: `Plan` is a transparent wrapper of `[Segment]`.
        unsafe { &*(segs as *const [Segment] as *const Plan) }
    }

    /// `segs` as a plan.
    ///
    /// # Safety
    /// The local side of every segment (`dst` of a read, `src` of a write or
    /// of a local copy, both of a local copy) must be memory of this process,
    /// valid for that access for its whole length for as long as the plan is
    /// used: ranges the caller checked against registered memory.
    pub unsafe fn assume_checked(segs: &[Segment]) -> &Plan {
        Plan::of(segs)
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// The first `n` segments and the rest, each a plan.
    pub fn split_at(&self, n: usize) -> (&Plan, &Plan) {
        let (a, b) = self.0.split_at(n);
        (Plan::of(a), Plan::of(b))
    }

    /// Total bytes (saturating).
    pub fn bytes(&self) -> u64 {
        self.0.iter().fold(0u64, |acc, s| acc.saturating_add(s.len))
    }
}

impl std::ops::Deref for Plan {
    type Target = [Segment];
    fn deref(&self) -> &[Segment] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Plan {
    type Item = &'a Segment;
    type IntoIter = std::slice::Iter<'a, Segment>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Segments a plan keeps in place, without an allocation (a single-block
/// transfer's one segment per tensor pair, for one or two tensors).
pub(crate) const INLINE_SEGMENTS: usize = 2;

/// A planner's list of segments: inline up to [`INLINE_SEGMENTS`], else on
/// the heap.
pub(crate) type Segs = smallvec::SmallVec<[Segment; INLINE_SEGMENTS]>;

/// An owned [`Plan`], as the planners return it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PlanBuf(Segs);

impl PlanBuf {
    /// The planners' result (`cache::plan`), or ranges the registry checked.
    pub(super) fn new(segs: impl Into<Segs>) -> PlanBuf {
        PlanBuf(segs.into())
    }

    /// True when the segments live on the heap (more than [`INLINE_SEGMENTS`]).
    #[cfg(test)]
    pub(crate) fn on_heap(&self) -> bool {
        self.0.spilled()
    }
}

impl std::ops::Deref for PlanBuf {
    type Target = Plan;
    fn deref(&self) -> &Plan {
        Plan::of(&self.0)
    }
}

impl PartialEq<Vec<Segment>> for PlanBuf {
    fn eq(&self, other: &Vec<Segment>) -> bool {
        self.0[..] == other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, BuildHasherDefault};

    #[test]
    fn id_maps_find_every_id_and_spread_sequential_ones() {
        let mut m: IdMap<i64, i64> = IdMap::default();
        for id in (-50..1000).chain([i64::MIN, i64::MAX]) {
            m.insert(id, id.wrapping_mul(3));
        }
        for id in (-50..1000).chain([i64::MIN, i64::MAX]) {
            assert_eq!(m.get(&id), Some(&id.wrapping_mul(3)));
        }
        assert_eq!(m.remove(&7), Some(21));
        assert!(!m.contains_key(&7));
        // Sequential ids differ in their top 7 bits (a hash table's tag
        // bytes) as well as in their low bits (its bucket index).
        let b = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (0u64..1024).map(|id| b.hash_one(id)).collect();
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(tags.len() > 100, "{} distinct tags", tags.len());
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        assert!(low.len() > 550, "{} distinct low bits", low.len());
    }
}
