// Dtype names and sizes, and the bulk conversion to float32 used by the weight loader.
#include "core/dtype.h"

#include <stdexcept>
#include <string>

namespace tg {

// Safetensors data is little-endian; we read it in place.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the safetensors reader assumes a little-endian host");

namespace {

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kF64, "F64", 8},         {DType::kF32, "F32", 4},         {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},       {DType::kI64, "I64", 8},         {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},         {DType::kI8, "I8", 1},           {DType::kU64, "U64", 8},
    {DType::kU32, "U32", 4},         {DType::kU16, "U16", 2},         {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},       {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E5M2, "F8_E5M2", 1},
};

const DTypeEntry& Entry(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  throw std::invalid_argument("unknown DType " + std::to_string(static_cast<int>(dtype)));
}

}  // namespace

std::optional<DType> ParseDType(std::string_view name) {
  for (const auto& e : kDTypes) {
    if (name == e.name) return e.dtype;
  }
  return std::nullopt;
}

const char* DTypeName(DType dtype) { return Entry(dtype).name; }

size_t DTypeSize(DType dtype) { return Entry(dtype).size; }

bool ConvertsToF32(DType dtype) { return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16; }

void ConvertToF32(DType dtype, const void* src, size_t count, float* dst) {
  if (!ConvertsToF32(dtype)) {
    throw std::invalid_argument(std::string("cannot convert ") + DTypeName(dtype) + " to float32");
  }
  if (count == 0) return;
  const auto* bytes = static_cast<const unsigned char*>(src);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, bytes, count * sizeof(float));
      return;
    case DType::kBF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = Bf16ToF32(h);
      }
      return;
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = F16ToF32(h);
      }
      return;
    default:
      return;
  }
}

void ConvertFloats(DType from, const void* src, size_t count, DType to, void* dst) {
  if (!ConvertsToF32(from) || !ConvertsToF32(to)) {
    throw std::invalid_argument(std::string("cannot convert ") + DTypeName(from) + " to " + DTypeName(to));
  }
  if (count == 0) return;
  if (from == to) {
    std::memcpy(dst, src, count * DTypeSize(to));
    return;
  }
  if (to == DType::kF32) {
    ConvertToF32(from, src, count, static_cast<float*>(dst));
    return;
  }
  // Through float32 in cache-sized pieces; widening to float32 is exact, so this
  // rounds once, as a direct conversion would.
  constexpr size_t kPiece = 4096;
  float wide[kPiece];
  const auto* in = static_cast<const unsigned char*>(src);
  auto* out = static_cast<uint16_t*>(dst);
  const size_t in_size = DTypeSize(from);
  for (size_t at = 0; at < count; at += kPiece) {
    const size_t n = count - at < kPiece ? count - at : kPiece;
    ConvertToF32(from, in + at * in_size, n, wide);
    if (to == DType::kBF16) {
      for (size_t i = 0; i < n; ++i) out[at + i] = F32ToBf16(wide[i]);
    } else {
      for (size_t i = 0; i < n; ++i) out[at + i] = F32ToF16(wide[i]);
    }
  }
}

}  // namespace tg
