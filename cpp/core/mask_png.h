// Stage 5: label map -> AnomalyMask PNG: 8-bit truecolour RGB (colour type 2), the input's
// width and height, background white, each label a flat colour, IHDR + IDAT + IEND only
// (L4V's mask format; PIL.Image.blend with the RGB input works on it).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace openlookout {

using Rgb = std::array<uint8_t, 3>;

// How the IDAT stream is produced. Both give the same filtered scanlines (filter Up for a row
// whose labels repeat the row above, Sub otherwise), so both decode to the same pixels.
enum class MaskEncoding : uint8_t {
  Auto,     // Runs unless the map has too many label runs for it, then Deflate
  Runs,     // a purpose-built DEFLATE writer working from label runs: cost ~ rows + runs
  Deflate,  // the filtered scanlines through libdeflate: cost ~ pixels, for pathological maps
};

struct MaskEncoderScratch {
  // A run of one label within a row.
  struct Run {
    uint32_t length;
    uint32_t label;
  };
  // A row that differs from the one above (its runs) followed by rows - 1 repeats of it.
  struct RowGroup {
    size_t first_run;
    uint32_t run_count;
    uint32_t rows;
  };
  std::vector<Run> runs;
  std::vector<RowGroup> row_groups;
  std::vector<uint8_t> filtered;  // Deflate only: PNG scanlines with their filter bytes
  std::vector<uint8_t> deflated;  // the zlib stream
  void* compressor = nullptr;     // libdeflate compressor, owned, created on first Deflate use

  // Tests and benchmarks: `encoding` forces a path (Auto in production); `used` reports the
  // path the last call took.
  MaskEncoding encoding = MaskEncoding::Auto;
  MaskEncoding used = MaskEncoding::Auto;

  MaskEncoderScratch() = default;
  MaskEncoderScratch(const MaskEncoderScratch&) = delete;
  MaskEncoderScratch& operator=(const MaskEncoderScratch&) = delete;
  ~MaskEncoderScratch();
};

// `palette[k]` is the colour of label k (palette[0] = background, #FFFFFF for L4V); a label
// >= palette_size throws an InternalServer error.
// Appends nothing: `out` is overwritten with the PNG file bytes.
// `label_pixels`, when not null, points to palette_size entries that are overwritten with the
// number of pixels of each label. On the usual (Runs) path they come from the runs the encoder
// walks anyway, at no measurable cost; on the Deflate path they cost an extra pass over the map.
void encode_mask_png(const uint8_t* labels, int width, int height, const Rgb* palette,
                     size_t palette_size, MaskEncoderScratch& scratch, std::vector<uint8_t>& out,
                     uint64_t* label_pixels = nullptr);

}  // namespace openlookout
