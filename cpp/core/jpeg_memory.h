// libjpeg's memory manager, replaced by one that serves every allocation of a decompressor from a
// per-worker arena kept across images: decoding another image of a size seen before allocates
// nothing (issue 4). libjpeg's own manager (jmemmgr.c) mallocs a pool or two per image plus one
// block per large object, and frees them all when the image ends: 9-11 malloc calls per JPEG.
//
// The contract followed is libjpeg-turbo's (jpeglib.h struct jpeg_memory_mgr, libjpeg.txt
// "Memory management", jmemmgr.c): allocations never return NULL (failures go to error_exit),
// every object starts on a 32-byte boundary and its size is rounded up to one (libjpeg-turbo's
// ALIGN_SIZE with SIMD: its AVX2 kernels load aligned vectors and may read up to the next
// boundary), sample rows are padded to 64 samples, and virtual arrays are only accessed through
// access_virt_*array by row ranges. Virtual arrays always live wholly in memory (no backing
// store): the decoder checks the image's dimensions before libjpeg realizes any of them.
//
// Private to decode_jpeg.cpp; it includes jpeglib.h, which no other header of the core should.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>  // jpeglib.h uses FILE and size_t without including their headers

#include <jpeglib.h>

namespace openlookout {
namespace detail {

// A bump allocator over one block that is kept between cycles (images). A cycle that needs more
// than the block holds takes extra blocks, freed when the cycle ends; the next cycle then starts
// with one block big enough for the whole need, so a repeated workload settles at zero
// allocations. The kept block never exceeds `retention_cap` bytes: an image needing more (only
// near the largest sizes the limits allow, or with hostile headers) pays for the rest each time
// instead of pinning that memory to the worker for good.
class ArenaRegion {
 public:
  explicit ArenaRegion(size_t retention_cap) noexcept : retention_cap_(retention_cap) {}
  ~ArenaRegion() { release(); }
  ArenaRegion(const ArenaRegion&) = delete;
  ArenaRegion& operator=(const ArenaRegion&) = delete;

  // `bytes` rounded up to kAlignment, at a kAlignment-aligned address; nullptr when the system
  // has no memory left (or `bytes` is absurd).
  void* allocate(size_t bytes) noexcept;
  // Ends a cycle: everything allocated is forgotten, extra blocks are freed.
  void reset() noexcept;
  // Frees every block.
  void release() noexcept;

  // Blocks obtained from the system since construction (tests check that this stays put).
  uint64_t blocks_allocated() const noexcept { return blocks_allocated_; }
  // Bytes held between cycles.
  size_t retained_bytes() const noexcept;

  static constexpr size_t kAlignment = 32;

 private:
  struct Block;
  Block* new_block(size_t capacity) noexcept;
  void* bump(Block* block, size_t bytes) noexcept;

  Block* kept_ = nullptr;      // the block kept between cycles
  Block* overflow_ = nullptr;  // this cycle's extra blocks, newest first
  size_t wanted_capacity_ = 0; // what the kept block should hold, learnt from earlier cycles
  size_t retention_cap_;
  uint64_t blocks_allocated_ = 0;
};

// The memory manager a JpegDecoder's decompressor runs on. install() takes over cinfo->mem right
// after jpeg_create_decompress: the few objects libjpeg allocated while creating itself (marker
// reader, input controller, master record, in libjpeg's own manager) stay where they are, and
// libjpeg's manager is destroyed with them by self_destruct (jpeg_destroy_decompress).
//
// Pools: JPOOL_IMAGE objects come from `image`, reset by free_pool(JPOOL_IMAGE), which
// jpeg_finish_decompress and jpeg_abort_decompress call. After creation, the only JPOOL_PERMANENT
// objects a decompressor with a caller-supplied source allocates are its quantization and Huffman
// tables (jpeg_alloc_quant_table / jpeg_alloc_huff_table, when a DQT/DHT fills an empty slot, and
// the standard Huffman tables jdhuff.c installs into empty slots); they come from `tables`, which
// begin_image() empties together with the table slots.
struct JpegMemoryManager {
  jpeg_memory_mgr pub;  // first member: libjpeg hands back &pub as cinfo->mem

  jpeg_memory_mgr* library_manager = nullptr;  // the manager jpeg_create_decompress made
  ArenaRegion image{size_t{64} << 20};  // covers a 4096x4096 progressive 4:2:0 image's coefficients
  ArenaRegion tables{size_t{64} << 10};
  jvirt_sarray_ptr virtual_sample_arrays = nullptr;  // this image's, in `image`
  jvirt_barray_ptr virtual_block_arrays = nullptr;

  // Call once, right after jpeg_create_decompress, before anything else uses cinfo->mem.
  void install(j_decompress_ptr cinfo) noexcept;

  // Call before each image (the decompressor in its start state): forgets the previous image's
  // quantization and Huffman tables, so that a stream lacking a DQT or DHT fails, or gets
  // libjpeg's standard Huffman tables, exactly as with a fresh decompressor (Pillow's case),
  // instead of silently decoding with the last request's tables.
  void begin_image(j_decompress_ptr cinfo) noexcept;

  uint64_t blocks_allocated() const noexcept {
    return image.blocks_allocated() + tables.blocks_allocated();
  }
};

}  // namespace detail
}  // namespace openlookout
