// Images as the pipeline passes them between stages: packed 8-bit RGB, rows top to bottom.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace openlookout {

// A read-only view of packed RGB888 pixels. `row_stride` is in bytes (>= 3 * width), so a view
// can point into a caller's array (numpy rows with padding) without a copy.
struct RgbView {
  const uint8_t* pixels = nullptr;
  int width = 0;
  int height = 0;
  size_t row_stride = 0;

  const uint8_t* row(int y) const { return pixels + static_cast<size_t>(y) * row_stride; }
};

// An owned, reusable RGB888 buffer. `pixels` keeps its capacity between images, so decoding
// images of the same size again allocates nothing.
struct RgbImage {
  std::vector<uint8_t> pixels;
  int width = 0;
  int height = 0;
  // The size the file declares. Equal to width x height unless the decoder scaled the image
  // down on the way (opt-in JPEG DCT scaling): masks and areas are always at this size.
  int source_width = 0;
  int source_height = 0;

  void reset(int w, int h) {
    width = source_width = w;
    height = source_height = h;
    pixels.resize(static_cast<size_t>(w) * static_cast<size_t>(h) * 3);
  }
  RgbView view() const { return {pixels.data(), width, height, static_cast<size_t>(width) * 3}; }
};

}  // namespace openlookout
