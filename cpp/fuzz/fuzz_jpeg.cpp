// libFuzzer target: JPEG bytes -> Decoder::decode (libjpeg-turbo's libjpeg API, CMYK/YCCK
// conversion, DCT scaling). Seeds: cpp/fuzz/corpus/fuzz_jpeg, dictionary cpp/fuzz/jpeg.dict.
#include "fuzz_decode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return openlookout_fuzz::fuzz_decode(data, size, openlookout::ImageFormat::Jpeg);
}
