// The arena-backed libjpeg memory manager (see jpeg_memory.h for the contract it keeps).
//
// Every method here may be called from inside libjpeg and may leave through error_exit, which
// longjmps over this frame: so no function here holds an object with a destructor, throws, or
// allocates through C++ (a std::bad_alloc cannot cross libjpeg's C frames).
#include "jpeg_memory.h"

#include <jerror.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

// The virtual-array control blocks. jpeglib.h only names these types (pointers to them are
// opaque handles for libjpeg's modules); each memory manager defines them for itself.
struct jvirt_sarray_control {
  JSAMPARRAY rows;             // nullptr until realize_virt_arrays
  JDIMENSION rows_in_array;
  JDIMENSION samples_per_row;
  JDIMENSION max_access;       // most rows one access_virt_sarray may ask for
  JDIMENSION first_undefined_row;  // rows from here on were never written
  boolean pre_zero;            // undefined rows read as zeros (else reading them is an error)
  jvirt_sarray_control* next;
};

struct jvirt_barray_control {
  JBLOCKARRAY rows;
  JDIMENSION rows_in_array;
  JDIMENSION blocks_per_row;
  JDIMENSION max_access;
  JDIMENSION first_undefined_row;
  boolean pre_zero;
  jvirt_barray_control* next;
};

namespace openlookout {
namespace detail {

namespace {

constexpr size_t kAlignment = ArenaRegion::kAlignment;
// A block's first byte (and so its header size) on a cache line.
constexpr size_t kBlockAlignment = 64;
// The smallest block worth asking the system for.
constexpr size_t kMinBlockBytes = size_t{64} << 10;
// Sample rows are padded to twice the alignment, as jmemmgr.c does: libjpeg-turbo's SIMD
// upsamplers and colour converters write whole vectors past a row's last sample.
constexpr size_t kSampleRowAlignment = 2 * kAlignment;

constexpr size_t round_up(size_t value, size_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

static_assert(sizeof(JBLOCK) % kAlignment == 0, "JBLOCK rows must stay aligned");

}  // namespace

// ---- ArenaRegion ------------------------------------------------------------------------------

struct ArenaRegion::Block {
  Block* next;
  size_t capacity;  // bytes after the header
  size_t used;
};

namespace {
constexpr size_t kHeaderBytes = round_up(sizeof(void*) * 3, kBlockAlignment);
// No request comes near this (libjpeg refuses objects over max_alloc_chunk, 1e9 bytes, and the
// decoder's size limits keep whole images far below); it keeps the arithmetic below from
// overflowing.
constexpr size_t kMaxRequestBytes = size_t{1} << 40;
}  // namespace

ArenaRegion::Block* ArenaRegion::new_block(size_t capacity) noexcept {
  const size_t total = round_up(kHeaderBytes + capacity, kBlockAlignment);
  void* memory = std::aligned_alloc(kBlockAlignment, total);
  if (memory == nullptr) return nullptr;
  ++blocks_allocated_;
  Block* block = static_cast<Block*>(memory);
  block->next = nullptr;
  block->capacity = total - kHeaderBytes;
  block->used = 0;
  return block;
}

void* ArenaRegion::bump(Block* block, size_t bytes) noexcept {
  if (block == nullptr || block->capacity - block->used < bytes) return nullptr;
  void* result = reinterpret_cast<char*>(block) + kHeaderBytes + block->used;
  block->used += bytes;
  return result;
}

void* ArenaRegion::allocate(size_t bytes) noexcept {
  if (bytes > kMaxRequestBytes) return nullptr;
  bytes = round_up(std::max<size_t>(bytes, 1), kAlignment);
  // The first allocation of a cycle swaps the kept block for a bigger one when an earlier cycle
  // needed more than it holds.
  if (overflow_ == nullptr && (kept_ == nullptr || kept_->used == 0) &&
      (kept_ == nullptr || kept_->capacity < wanted_capacity_)) {
    Block* bigger = new_block(std::max(wanted_capacity_, kMinBlockBytes));
    if (bigger != nullptr) {
      std::free(kept_);
      kept_ = bigger;
    }
  }
  if (void* p = bump(kept_, bytes)) return p;
  if (void* p = bump(overflow_, bytes)) return p;
  // A new extra block, growing geometrically so that a first big image takes few of them.
  size_t held = kept_ != nullptr ? kept_->capacity : 0;
  for (Block* b = overflow_; b != nullptr; b = b->next) held += b->capacity;
  Block* extra = new_block(std::max({bytes, kMinBlockBytes, held}));
  if (extra == nullptr) return nullptr;
  extra->next = overflow_;
  overflow_ = extra;
  return bump(extra, bytes);
}

void ArenaRegion::reset() noexcept {
  if (overflow_ != nullptr) {
    size_t needed = kept_ != nullptr ? kept_->used : 0;
    while (overflow_ != nullptr) {
      Block* next = overflow_->next;
      needed += overflow_->used;
      std::free(overflow_);
      overflow_ = next;
    }
    // A little headroom, so that the next image of about this size (another subsampling, a few
    // more markers) still fits in the one block.
    const size_t with_headroom = round_up(needed + needed / 16, kMinBlockBytes);
    wanted_capacity_ = std::min(std::max(wanted_capacity_, with_headroom), retention_cap_);
  }
  if (kept_ != nullptr) kept_->used = 0;
}

void ArenaRegion::release() noexcept {
  reset();
  std::free(kept_);
  kept_ = nullptr;
}

size_t ArenaRegion::retained_bytes() const noexcept {
  return kept_ != nullptr ? kept_->capacity : 0;
}

// ---- the jpeg_memory_mgr methods --------------------------------------------------------------

namespace {

static_assert(std::is_standard_layout_v<JpegMemoryManager>,
              "cinfo->mem is cast back to the JpegMemoryManager it is the first member of");

JpegMemoryManager& manager_of(j_common_ptr cinfo) {
  return *reinterpret_cast<JpegMemoryManager*>(cinfo->mem);
}

// error_exit does not return (the decoder's longjmps); the returns after these calls only keep
// the compiler content.
void out_of_memory(j_common_ptr cinfo, int which) { ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, which); }

ArenaRegion* region_for(j_common_ptr cinfo, int pool_id) {
  JpegMemoryManager& manager = manager_of(cinfo);
  if (pool_id == JPOOL_IMAGE) return &manager.image;
  if (pool_id == JPOOL_PERMANENT) return &manager.tables;
  ERREXIT1(cinfo, JERR_BAD_POOL_ID, pool_id);
  return nullptr;
}

void* allocate(j_common_ptr cinfo, int pool_id, size_t bytes, int which) {
  ArenaRegion* region = region_for(cinfo, pool_id);
  if (region == nullptr) return nullptr;
  if (bytes > static_cast<size_t>(cinfo->mem->max_alloc_chunk)) {
    out_of_memory(cinfo, which);
    return nullptr;
  }
  void* p = region->allocate(bytes);
  if (p == nullptr) out_of_memory(cinfo, which);
  return p;
}

void* alloc_small(j_common_ptr cinfo, int pool_id, size_t bytes) {
  return allocate(cinfo, pool_id, bytes, 1);
}

void* alloc_large(j_common_ptr cinfo, int pool_id, size_t bytes) {
  return allocate(cinfo, pool_id, bytes, 3);
}

// `rows` row pointers to `rows` rows of `row_bytes` each, contiguous. libjpeg splits such arrays
// into chunks of at most max_alloc_chunk bytes; its modules never rely on rows being contiguous
// or not, so one piece is fine, but each row must be aligned.
template <typename Row>
Row* alloc_rows(j_common_ptr cinfo, int pool_id, size_t row_bytes, JDIMENSION rows) {
  if (rows == 0 || row_bytes > static_cast<size_t>(cinfo->mem->max_alloc_chunk) ||
      rows > kMaxRequestBytes / row_bytes) {
    ERREXIT(cinfo, JERR_WIDTH_OVERFLOW);
    return nullptr;
  }
  Row* pointers = static_cast<Row*>(allocate(cinfo, pool_id, rows * sizeof(Row), 5));
  ArenaRegion* region = region_for(cinfo, pool_id);
  // Not through allocate(): the whole array may exceed max_alloc_chunk, which libjpeg applies
  // to single allocations only.
  char* storage = static_cast<char*>(region->allocate(row_bytes * rows));
  if (storage == nullptr) {
    out_of_memory(cinfo, 6);
    return nullptr;
  }
  for (JDIMENSION r = 0; r < rows; ++r) {
    pointers[r] = reinterpret_cast<Row>(storage + static_cast<size_t>(r) * row_bytes);
  }
  return pointers;
}

JSAMPARRAY alloc_sarray(j_common_ptr cinfo, int pool_id, JDIMENSION samples_per_row,
                        JDIMENSION rows) {
  const size_t row_bytes = round_up(static_cast<size_t>(samples_per_row) * sizeof(JSAMPLE),
                                    kSampleRowAlignment);
  return alloc_rows<JSAMPROW>(cinfo, pool_id, std::max(row_bytes, kSampleRowAlignment), rows);
}

JBLOCKARRAY alloc_barray(j_common_ptr cinfo, int pool_id, JDIMENSION blocks_per_row,
                         JDIMENSION rows) {
  const size_t row_bytes = std::max<size_t>(blocks_per_row, 1) * sizeof(JBLOCK);
  return alloc_rows<JBLOCKROW>(cinfo, pool_id, row_bytes, rows);
}

jvirt_sarray_ptr request_virt_sarray(j_common_ptr cinfo, int pool_id, boolean pre_zero,
                                     JDIMENSION samples_per_row, JDIMENSION rows,
                                     JDIMENSION max_access) {
  // libjpeg has image-lifetime virtual arrays only.
  if (pool_id != JPOOL_IMAGE) ERREXIT1(cinfo, JERR_BAD_POOL_ID, pool_id);
  auto* array = static_cast<jvirt_sarray_control*>(
      allocate(cinfo, JPOOL_IMAGE, sizeof(jvirt_sarray_control), 1));
  JpegMemoryManager& manager = manager_of(cinfo);
  *array = {nullptr, rows, samples_per_row, max_access, 0, pre_zero,
            manager.virtual_sample_arrays};
  manager.virtual_sample_arrays = array;
  return array;
}

jvirt_barray_ptr request_virt_barray(j_common_ptr cinfo, int pool_id, boolean pre_zero,
                                     JDIMENSION blocks_per_row, JDIMENSION rows,
                                     JDIMENSION max_access) {
  if (pool_id != JPOOL_IMAGE) ERREXIT1(cinfo, JERR_BAD_POOL_ID, pool_id);
  auto* array = static_cast<jvirt_barray_control*>(
      allocate(cinfo, JPOOL_IMAGE, sizeof(jvirt_barray_control), 1));
  JpegMemoryManager& manager = manager_of(cinfo);
  *array = {nullptr, rows, blocks_per_row, max_access, 0, pre_zero,
            manager.virtual_block_arrays};
  manager.virtual_block_arrays = array;
  return array;
}

void realize_virt_arrays(j_common_ptr cinfo) {
  JpegMemoryManager& manager = manager_of(cinfo);
  for (jvirt_sarray_ptr a = manager.virtual_sample_arrays; a != nullptr; a = a->next) {
    if (a->rows == nullptr) {
      a->rows = alloc_sarray(cinfo, JPOOL_IMAGE, a->samples_per_row, a->rows_in_array);
    }
  }
  for (jvirt_barray_ptr a = manager.virtual_block_arrays; a != nullptr; a = a->next) {
    if (a->rows == nullptr) {
      a->rows = alloc_barray(cinfo, JPOOL_IMAGE, a->blocks_per_row, a->rows_in_array);
    }
  }
}

// jmemmgr.c's access rules, less the backing store: rows [start_row, start_row + rows) must lie
// in the array and number at most max_access; a writer may not skip rows; a reader of rows never
// written gets zeros in a pre-zeroed array and an error otherwise. Rows are zeroed when first
// touched (the arena's memory holds the previous image's data).
template <typename Array, typename RowArray>
RowArray access_rows(j_common_ptr cinfo, Array* array, JDIMENSION start_row, JDIMENSION rows,
                     boolean writable, size_t row_bytes) {
  const uint64_t end_row = uint64_t{start_row} + rows;
  if (array == nullptr || array->rows == nullptr || end_row > array->rows_in_array ||
      rows > array->max_access) {
    ERREXIT(cinfo, JERR_BAD_VIRTUAL_ACCESS);
    return nullptr;
  }
  if (array->first_undefined_row < end_row) {
    JDIMENSION zero_from = array->first_undefined_row;
    if (array->first_undefined_row < start_row) {
      if (writable) ERREXIT(cinfo, JERR_BAD_VIRTUAL_ACCESS);  // a writer skipped rows
      zero_from = start_row;  // a reader may look ahead
    }
    if (writable) array->first_undefined_row = static_cast<JDIMENSION>(end_row);
    if (array->pre_zero) {
      for (uint64_t r = zero_from; r < end_row; ++r) std::memset(array->rows[r], 0, row_bytes);
    } else if (!writable) {
      ERREXIT(cinfo, JERR_BAD_VIRTUAL_ACCESS);  // reading rows never written
    }
  }
  return array->rows + start_row;
}

JSAMPARRAY access_virt_sarray(j_common_ptr cinfo, jvirt_sarray_ptr array, JDIMENSION start_row,
                              JDIMENSION rows, boolean writable) {
  const size_t row_bytes = array != nullptr ? array->samples_per_row * sizeof(JSAMPLE) : 0;
  return access_rows<jvirt_sarray_control, JSAMPARRAY>(cinfo, array, start_row, rows, writable,
                                                       row_bytes);
}

JBLOCKARRAY access_virt_barray(j_common_ptr cinfo, jvirt_barray_ptr array, JDIMENSION start_row,
                               JDIMENSION rows, boolean writable) {
  const size_t row_bytes = array != nullptr ? array->blocks_per_row * sizeof(JBLOCK) : 0;
  return access_rows<jvirt_barray_control, JBLOCKARRAY>(cinfo, array, start_row, rows, writable,
                                                        row_bytes);
}

void clear_tables(j_common_ptr cinfo) {
  if (!cinfo->is_decompressor) return;
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  for (auto& table : d->quant_tbl_ptrs) table = nullptr;
  for (auto& table : d->dc_huff_tbl_ptrs) table = nullptr;
  for (auto& table : d->ac_huff_tbl_ptrs) table = nullptr;
}

void free_pool(j_common_ptr cinfo, int pool_id) {
  JpegMemoryManager& manager = manager_of(cinfo);
  if (pool_id == JPOOL_IMAGE) {
    manager.virtual_sample_arrays = nullptr;
    manager.virtual_block_arrays = nullptr;
    manager.image.reset();
  } else if (pool_id == JPOOL_PERMANENT) {
    clear_tables(cinfo);
    manager.tables.reset();
  } else {
    ERREXIT1(cinfo, JERR_BAD_POOL_ID, pool_id);
  }
}

void self_destruct(j_common_ptr cinfo) {
  JpegMemoryManager& manager = manager_of(cinfo);
  clear_tables(cinfo);
  manager.virtual_sample_arrays = nullptr;
  manager.virtual_block_arrays = nullptr;
  manager.image.release();
  manager.tables.release();
  // Hand back to libjpeg's manager, which frees what was allocated while creating the object.
  cinfo->mem = manager.library_manager;
  manager.library_manager = nullptr;
  if (cinfo->mem != nullptr) (*cinfo->mem->self_destruct)(cinfo);
}

}  // namespace

void JpegMemoryManager::install(j_decompress_ptr cinfo) noexcept {
  library_manager = cinfo->mem;
  pub.alloc_small = alloc_small;
  pub.alloc_large = alloc_large;
  pub.alloc_sarray = alloc_sarray;
  pub.alloc_barray = alloc_barray;
  pub.request_virt_sarray = request_virt_sarray;
  pub.request_virt_barray = request_virt_barray;
  pub.realize_virt_arrays = realize_virt_arrays;
  pub.access_virt_sarray = access_virt_sarray;
  pub.access_virt_barray = access_virt_barray;
  pub.free_pool = free_pool;
  pub.self_destruct = self_destruct;
  // Only the backing-store policy reads max_memory_to_use, and there is none here; jdmarker.c
  // sizes saved markers by max_alloc_chunk.
  pub.max_memory_to_use = library_manager->max_memory_to_use;
  pub.max_alloc_chunk = library_manager->max_alloc_chunk;
  cinfo->mem = &pub;
}

void JpegMemoryManager::begin_image(j_decompress_ptr cinfo) noexcept {
  clear_tables(reinterpret_cast<j_common_ptr>(cinfo));
  tables.reset();
}

}  // namespace detail
}  // namespace openlookout
