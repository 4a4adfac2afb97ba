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

struct MaskEncoderScratch {
  std::vector<uint8_t> filtered;  // PNG scanlines with their filter bytes
  std::vector<uint8_t> deflated;
  void* compressor = nullptr;  // libdeflate compressor, owned
  MaskEncoderScratch() = default;
  MaskEncoderScratch(const MaskEncoderScratch&) = delete;
  MaskEncoderScratch& operator=(const MaskEncoderScratch&) = delete;
  ~MaskEncoderScratch();
};

// `palette[k]` is the colour of label k (palette[0] = background, #FFFFFF for L4V).
// Appends nothing: `out` is overwritten with the PNG file bytes.
void encode_mask_png(const uint8_t* labels, int width, int height, const Rgb* palette,
                     size_t palette_size, MaskEncoderScratch& scratch, std::vector<uint8_t>& out);

}  // namespace openlookout
