// libFuzzer target: PNG bytes -> Decoder::decode (every colour type, bit depth, interlacing,
// chunk limits). Seeds: cpp/fuzz/corpus/fuzz_png, dictionary cpp/fuzz/png.dict.
//
// Each input is decoded as given and, when its chunk CRCs are wrong (as nearly every mutation
// leaves them), once more with the CRCs fixed, so the fuzzer gets past the CRC check. Every
// outcome is compared with a plain libspng decode (png_reference.h).
#include <vector>

#include "fuzz_decode.h"
#include "png_reference.h"

namespace {

void decode_and_compare(const uint8_t* data, size_t size) {
  using namespace openlookout;
  static Decoder decoder;
  static RgbImage image;
  DecodeLimits limits;
  limits.min_side = 1;
  limits.max_side = 4096;
  const bool decoded = openlookout_fuzz::expect_ok_or_validation(
      [&] { decoder.decode(data, size, ImageFormat::Png, limits, image); });
  if (decoded) openlookout_fuzz::check_image(image, limits);
  if (!decoded && (!image.pixels.empty() || image.width != 0))
    openlookout_fuzz::fail("a failed decode left an image behind", "");
  // The decoder checks the signature itself; the reference must see the same bytes.
  if (size >= 8) openlookout_fuzz::compare_with_reference(data, size, decoded, image, limits);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  decode_and_compare(data, size);
  std::vector<uint8_t> fixed(data, data + size);
  if (openlookout_fuzz::fix_png_crcs(fixed)) decode_and_compare(fixed.data(), fixed.size());
  return 0;
}
