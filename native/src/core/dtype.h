// Element types as named in safetensors headers, their sizes, and exact
// conversions between float32 and the 16-bit float formats (bf16, fp16).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace tg {

// Every dtype a safetensors header may name that the loader can size-check;
// only kF32, kBF16 and kF16 convert to float32.
enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU64, kU32, kU16, kU8, kBool, kF8E4M3, kF8E5M2 };

// "F32" -> kF32, ...; nullopt for a name safetensors does not define (or we do not know).
std::optional<DType> ParseDType(std::string_view name);
// The safetensors name: kF8E4M3 -> "F8_E4M3".
const char* DTypeName(DType dtype);
size_t DTypeSize(DType dtype);
// True for the dtypes ConvertToF32 accepts.
bool ConvertsToF32(DType dtype);

// Converts `count` little-endian elements at `src` (no alignment needed) to float32.
// Throws std::invalid_argument when !ConvertsToF32(dtype).
void ConvertToF32(DType dtype, const void* src, size_t count, float* dst);

// Converts `count` elements from `from` to `to`, both among F32, BF16 and F16 (a
// plain copy when they are equal, so 16-bit weights load without a float32 detour).
// Throws std::invalid_argument for any other dtype.
void ConvertFloats(DType from, const void* src, size_t count, DType to, void* dst);

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// bf16 is the top half of a float32, so widening is exact for every value.
inline float Bf16ToF32(uint16_t h) { return BitsToFloat(static_cast<uint32_t>(h) << 16); }

inline float F16ToF32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  if (exponent == 0x1F) return BitsToFloat(sign | 0x7F800000 | (mantissa << 13));  // inf, nan (payload kept)
  if (exponent != 0) return BitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
  if (mantissa == 0) return BitsToFloat(sign);  // signed zero
  // Subnormal: mantissa * 2^-24, exact in float32.
  float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
  return sign ? -magnitude : magnitude;
}

// Round to nearest, ties to even; nan stays nan (quiet), overflow rounds to inf.
inline uint16_t F32ToBf16(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7FFFFFFF) > 0x7F800000) return static_cast<uint16_t>((u >> 16) | 0x0040);
  uint32_t rounding = 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

// Round to nearest, ties to even, including into the subnormal range; nan stays
// nan (quiet), values past the largest half (65504) round to inf.
inline uint16_t F32ToF16(float f) {
  uint32_t u = FloatBits(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  uint32_t abs = u & 0x7FFFFFFF;
  if (abs > 0x7F800000) return static_cast<uint16_t>(sign | 0x7E00 | ((abs >> 13) & 0x3FF));
  if (abs >= 0x477FF000) return static_cast<uint16_t>(sign | 0x7C00);  // >= 65520 rounds to inf; also inf
  int32_t exponent = static_cast<int32_t>(abs >> 23) - 127;
  if (exponent >= -14) {
    // Normal half: drop 13 mantissa bits with RNE; a carry correctly bumps the exponent.
    uint32_t bits = abs - (112u << 23);  // rebias 127 -> 15
    uint32_t rounded = bits + 0x0FFF + ((bits >> 13) & 1);
    return static_cast<uint16_t>(sign | (rounded >> 13));
  }
  if (exponent < -25) return sign;  // below half the smallest subnormal: rounds to zero
  // Subnormal half: the value in units of 2^-24 is (1.m) * 2^(exponent + 24), a shift right.
  uint32_t mantissa = (abs & 0x7FFFFF) | 0x800000;
  int shift = -exponent - 1;  // 14..24: 23 - (exponent + 24)
  uint32_t result = mantissa >> shift;
  uint32_t remainder = mantissa & ((1u << shift) - 1);
  uint32_t half = 1u << (shift - 1);
  if (remainder > half || (remainder == half && (result & 1))) ++result;
  return static_cast<uint16_t>(sign | result);
}

}  // namespace tg
