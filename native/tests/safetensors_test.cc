// Tests for the JSON parser, dtype conversions, SafetensorsArchive header
// validation and WeightLoader reads. Each test writes its own small
// safetensors files into a fresh temp dir.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "model/weight_loader.h"
#include "test_util.h"

namespace fs = std::filesystem;
using tg::DType;

namespace {

// ---- a tiny safetensors writer ------------------------------------------------

struct Tensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

std::string Le64(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out;
}

// A file from a raw header and data section; the header is space-padded to a
// multiple of 8 bytes as the reference writer does.
std::string RawFile(std::string header, const std::string& data) {
  while (header.size() % 8 != 0) header += ' ';
  return Le64(header.size()) + header + data;
}

std::string ShapeJson(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// Tensors laid out back to back in the given order.
std::string SafetensorsFile(const std::vector<Tensor>& tensors) {
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  std::string data;
  for (const auto& t : tensors) {
    header += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":" + ShapeJson(t.shape) +
              ",\"data_offsets\":[" + std::to_string(data.size()) + "," + std::to_string(data.size() + t.bytes.size()) +
              "]}";
    data += t.bytes;
  }
  return RawFile(header + "}", data);
}

std::string F32Bytes(const std::vector<float>& v) {
  std::string out(v.size() * 4, '\0');
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::string U16Bytes(const std::vector<float>& v, uint16_t (*convert)(float)) {
  std::string out;
  for (float f : v) {
    uint16_t h = convert(f);
    out += static_cast<char>(h & 0xFF);
    out += static_cast<char>(h >> 8);
  }
  return out;
}

Tensor F32Tensor(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& values) {
  return {name, "F32", std::move(shape), F32Bytes(values)};
}

std::vector<float> Iota(size_t n, float scale = 1.0f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i) * scale;
  return v;
}

// A fresh empty directory under the system temp dir, removed at exit.
class TempDir {
 public:
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "tg-safetensors-test-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  void Write(const std::string& name, const std::string& content) const {
    std::ofstream out(File(name), std::ios::binary);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
  }

 private:
  std::string path_;
};

// Opening a dir whose model.safetensors is `content` must fail mentioning each of `parts`.
void ExpectSingleFileError(const std::string& content, const std::vector<std::string>& parts) {
  TempDir dir;
  dir.Write("model.safetensors", content);
  try {
    tg::SafetensorsArchive archive(dir.path());
    std::printf("  expected an error containing '%s'\n", parts[0].c_str());
    ++tgtest::Failures();
  } catch (const std::runtime_error& e) {
    std::string msg = e.what();
    for (const auto& part : parts) {
      if (msg.find(part) == std::string::npos) {
        std::printf("  message '%s' lacks '%s'\n", msg.c_str(), part.c_str());
        ++tgtest::Failures();
      }
    }
  }
}

std::string ValidHeaderFor(const std::string& tensor_json) { return "{\"w\":" + tensor_json + "}"; }

std::string ModelsDir() {
  // __FILE__ is native/tests/safetensors_test.cc (absolute under CMake).
  return (fs::path(__FILE__).parent_path() / ".." / ".." / "models").lexically_normal().string();
}

}  // namespace

// ---- JSON ---------------------------------------------------------------------

TG_TEST(json_parses_values) {
  tg::JsonValue v = tg::ParseJson(
      " {\"a\": [1, -2, 3.5, true, false, null], \"s\": \"x\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\", "
      "\"big\": 18446744073709551615, \"min\": -9223372036854775808, \"e\": 1e3, \"o\": {}} ");
  CHECK(v.IsObject());
  const auto& a = v.Find("a")->AsArray();
  CHECK(a.size() == 6);
  CHECK(a[0].AsInt64() == 1);
  CHECK(a[1].AsInt64() == -2);
  CHECK(!a[1].AsUint64());
  CHECK(!a[2].AsInt64());
  CHECK(a[2].AsDouble() == 3.5);
  CHECK(a[3].AsBool() && !a[4].AsBool() && a[5].IsNull());
  CHECK(v.Find("s")->AsString() == "x\"\\/\b\f\n\r\t\xC3\xA9\xF0\x9F\x98\x80");
  CHECK(v.Find("big")->AsUint64() == std::numeric_limits<uint64_t>::max());
  CHECK(!v.Find("big")->AsInt64());
  CHECK(v.Find("min")->AsInt64() == std::numeric_limits<int64_t>::min());
  CHECK(!v.Find("e")->AsInt64());
  CHECK(v.Find("e")->AsDouble() == 1000.0);
  CHECK(v.Find("o")->AsObject().empty());
  CHECK(v.Find("missing") == nullptr);
  CHECK(!tg::ParseJson("18446744073709551616").AsUint64());
  CHECK(std::isinf(tg::ParseJson("1e999").AsDouble()));
  CHECK(tg::ParseJson("-1e-999").AsDouble() == 0.0);
  CHECK(tg::ParseJson("\"\xE2\x82\xAC\"").AsString() == "\xE2\x82\xAC");
}

TG_TEST(json_rejects_malformed_input_with_offset) {
  CHECK_THROWS_WITH(tg::ParseJson("[1,]"), "at byte 3");
  CHECK_THROWS_WITH(tg::ParseJson("{\"a\":1,}"), "at byte 7");
  CHECK_THROWS_WITH(tg::ParseJson("{\"a\":1,\"a\":2}"), "duplicate key \"a\" at byte 7");
  CHECK_THROWS_WITH(tg::ParseJson("01"), "leading zero");
  CHECK_THROWS_WITH(tg::ParseJson("1."), "at byte 2");
  CHECK_THROWS_WITH(tg::ParseJson("-"), "expected a digit");
  CHECK_THROWS_WITH(tg::ParseJson("1 2"), "unexpected data");
  CHECK_THROWS_WITH(tg::ParseJson(""), "unexpected end");
  CHECK_THROWS_WITH(tg::ParseJson("\"abc"), "unterminated string");
  CHECK_THROWS_WITH(tg::ParseJson("\"a\nb\""), "control character");
  CHECK_THROWS_WITH(tg::ParseJson("\"\\x\""), "invalid escape at byte 1");
  CHECK_THROWS_WITH(tg::ParseJson("\"\\ud800\""), "unpaired high surrogate");
  CHECK_THROWS_WITH(tg::ParseJson("\"\\udc00\""), "unpaired low surrogate");
  CHECK_THROWS_WITH(tg::ParseJson("\"\\u12G4\""), "invalid hex digit");
  CHECK_THROWS_WITH(tg::ParseJson("\"\xC0\xAF\""), "invalid UTF-8 at byte 1");
  CHECK_THROWS_WITH(tg::ParseJson("\"\xED\xA0\x80\""), "invalid UTF-8");  // encoded surrogate
  CHECK_THROWS_WITH(tg::ParseJson("\"\xE2\x82\""), "UTF-8");
  CHECK_THROWS_WITH(tg::ParseJson("tru"), "invalid literal");
  CHECK_THROWS_WITH(tg::ParseJson("NaN"), "unexpected character");
  CHECK_THROWS_WITH(tg::ParseJson(std::string("[1]\0", 4)), "unexpected data");
  CHECK_THROWS_WITH(tg::ParseJson(std::string(100000, '[')), "nesting deeper");
  try {
    tg::ParseJson("{\"a\" 1}");
    CHECK(false);
  } catch (const tg::JsonError& e) {
    CHECK(e.offset() == 5);
  }
}

// ---- dtypes -------------------------------------------------------------------

TG_TEST(dtype_names_and_sizes) {
  CHECK(tg::ParseDType("BF16") == DType::kBF16);
  CHECK(tg::ParseDType("F8_E4M3") == DType::kF8E4M3);
  CHECK(!tg::ParseDType("F128"));
  CHECK(!tg::ParseDType("f32"));
  CHECK(std::string(tg::DTypeName(DType::kF8E5M2)) == "F8_E5M2");
  CHECK(tg::DTypeSize(DType::kF64) == 8 && tg::DTypeSize(DType::kF16) == 2 && tg::DTypeSize(DType::kBool) == 1);
  CHECK(tg::ConvertsToF32(DType::kBF16) && !tg::ConvertsToF32(DType::kI64));
}

TG_TEST(f16_special_values) {
  CHECK(tg::F16ToF32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(tg::F16ToF32(0x03FF) == std::ldexp(1023.0f, -24));
  CHECK(tg::F16ToF32(0x0400) == std::ldexp(1.0f, -14));
  CHECK(tg::F16ToF32(0x7BFF) == 65504.0f);
  CHECK(tg::F16ToF32(0x3C00) == 1.0f);
  CHECK(tg::F16ToF32(0xC000) == -2.0f);
  CHECK(std::isinf(tg::F16ToF32(0x7C00)) && tg::F16ToF32(0x7C00) > 0);
  CHECK(std::isinf(tg::F16ToF32(0xFC00)) && tg::F16ToF32(0xFC00) < 0);
  CHECK(std::isnan(tg::F16ToF32(0x7E00)) && std::isnan(tg::F16ToF32(0x7C01)));
  CHECK(tg::F16ToF32(0x8000) == 0.0f && std::signbit(tg::F16ToF32(0x8000)));

  CHECK(tg::F32ToF16(65504.0f) == 0x7BFF);
  CHECK(tg::F32ToF16(65519.996f) == 0x7BFF);
  CHECK(tg::F32ToF16(65520.0f) == 0x7C00);  // tie rounds to even (inf)
  CHECK(tg::F32ToF16(1e10f) == 0x7C00);
  CHECK(tg::F32ToF16(-std::numeric_limits<float>::infinity()) == 0xFC00);
  CHECK((tg::F32ToF16(std::numeric_limits<float>::quiet_NaN()) & 0x7FFF) > 0x7C00);
  CHECK(tg::F32ToF16(std::ldexp(1.0f, -25)) == 0x0000);            // tie to even: 0
  CHECK(tg::F32ToF16(std::ldexp(1.0001f, -25)) == 0x0001);
  CHECK(tg::F32ToF16(std::ldexp(1.5f, -24)) == 0x0002);            // tie to even: 2
  CHECK(tg::F32ToF16(std::ldexp(2.5f, -24)) == 0x0002);
  CHECK(tg::F32ToF16(std::ldexp(1023.5f, -24)) == 0x0400);         // rounds up into the normals
  CHECK(tg::F32ToF16(-0.0f) == 0x8000);
  CHECK(tg::F32ToF16(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);     // tie to even
  CHECK(tg::F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02);
  CHECK(tg::F32ToF16(std::numeric_limits<float>::denorm_min()) == 0x0000);
}

TG_TEST(f16_and_bf16_round_trip_every_value) {
  int f16_bad = 0, bf16_bad = 0;
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    uint16_t bits = static_cast<uint16_t>(h);
    bool f16_nan = (bits & 0x7C00) == 0x7C00 && (bits & 0x3FF) != 0;
    if (f16_nan ? !std::isnan(tg::F16ToF32(bits)) : tg::F32ToF16(tg::F16ToF32(bits)) != bits) ++f16_bad;
    bool bf16_nan = (bits & 0x7F80) == 0x7F80 && (bits & 0x7F) != 0;
    if (bf16_nan ? !std::isnan(tg::Bf16ToF32(bits)) : tg::F32ToBf16(tg::Bf16ToF32(bits)) != bits) ++bf16_bad;
  }
  CHECK(f16_bad == 0);
  CHECK(bf16_bad == 0);
}

TG_TEST(f32_to_16_bit_rounding_matches_reference) {
  std::mt19937 rng(1234);
  int bf16_bad = 0, f16_bad = 0;
  for (int i = 0; i < 2000000; ++i) {
    float f = tg::BitsToFloat(static_cast<uint32_t>(rng()));
    if (std::isnan(f)) continue;
    // bf16: the nearest bf16 (ties to even) computed in double from the two neighbours.
    uint16_t lo = static_cast<uint16_t>(tg::FloatBits(f) >> 16);
    uint16_t got = tg::F32ToBf16(f);
    double exact = f, below = tg::Bf16ToF32(lo), above = tg::Bf16ToF32(static_cast<uint16_t>(lo + 1));
    // Past the largest bf16 the next step is 2^128, which rounds to inf.
    if (std::isinf(above)) above = std::copysign(std::ldexp(1.0, 128), exact);
    uint16_t want = lo;
    if (std::fabs(exact - above) < std::fabs(exact - below) ||
        (std::fabs(exact - above) == std::fabs(exact - below) && (lo & 1))) {
      want = static_cast<uint16_t>(lo + 1);
    }
    if (std::isinf(f)) want = lo;
    if (got != want && ++bf16_bad < 5) std::printf("  bf16(%a) = %04x, want %04x\n", f, got, want);
#ifdef __FLT16_MAX__
    _Float16 ref = static_cast<_Float16>(f);
    uint16_t ref_bits;
    std::memcpy(&ref_bits, &ref, 2);
    if (tg::F32ToF16(f) != ref_bits) ++f16_bad;
#endif
  }
  CHECK(bf16_bad == 0);
  CHECK(f16_bad == 0);
  CHECK(tg::F32ToBf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);  // tie to even
  CHECK(tg::F32ToBf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3F82);
  CHECK(tg::F32ToBf16(std::numeric_limits<float>::max()) == 0x7F80);
  CHECK(std::isnan(tg::Bf16ToF32(tg::F32ToBf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isnan(tg::Bf16ToF32(tg::F32ToBf16(tg::BitsToFloat(0x7F800001)))));  // payload only in low bits
}

// ---- archive and loader ------------------------------------------------------

TG_TEST(round_trips_f32_bf16_f16) {
  TempDir dir;
  std::vector<float> values = {0.0f, -1.5f, 3.14159f, 1e-3f, -65504.0f, 1e-7f, 2.0f, 0.333333f};
  dir.Write("model.safetensors",
            SafetensorsFile({F32Tensor("f32", {2, 4}, values), {"bf16", "BF16", {8}, U16Bytes(values, tg::F32ToBf16)},
                             {"f16", "F16", {4, 2}, U16Bytes(values, tg::F32ToF16)},
                             {"ids", "I64", {1}, std::string(8, '\0')}}));
  tg::WeightLoader loader(dir.path());
  CHECK(loader.Has("f32") && !loader.Has("nope"));
  CHECK(loader.Dtype("bf16") == "BF16");
  CHECK(loader.Shape("f16") == std::vector<int64_t>({4, 2}));
  CHECK(loader.Read("f32") == values);
  std::vector<float> bf16 = loader.Read("bf16"), f16 = loader.Read("f16");
  CHECK(bf16.size() == values.size() && f16.size() == values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    CHECK(bf16[i] == tg::Bf16ToF32(tg::F32ToBf16(values[i])));
    CHECK(f16[i] == tg::F16ToF32(tg::F32ToF16(values[i])));
    CHECK_NEAR(bf16[i], values[i], std::fabs(values[i]) / 128);
    CHECK_NEAR(f16[i], values[i], std::fabs(values[i]) / 1024 + 6e-8);
  }
  CHECK_THROWS_WITH(loader.Read("ids"), "tensor \"ids\" has dtype I64");
  CHECK_THROWS_WITH(loader.Read("nope"), ("model dir " + dir.path() + ": tensor \"nope\" not found").c_str());

  tg::SafetensorsArchive archive(dir.path());
  const auto& tensors = archive.tensors();
  CHECK(tensors.size() == 4);
  CHECK(tensors[0].name == "bf16" && tensors[1].name == "f16" && tensors[2].name == "f32" && tensors[3].name == "ids");
  CHECK(tensors[0].file == "model.safetensors" && tensors[0].nbytes == 16 && tensors[0].numel == 8);
  CHECK(archive.FileNames() == std::vector<std::string>({"model.safetensors"}));
  CHECK(archive.Metadata("model.safetensors").at("format") == "pt");
}

TG_TEST(reads_row_and_column_slices) {
  TempDir dir;
  std::vector<float> m = Iota(12);  // [3, 4]: row r, col c holds 4r + c
  dir.Write("model.safetensors",
            SafetensorsFile({F32Tensor("m", {3, 4}, m), {"h", "BF16", {3, 4}, U16Bytes(m, tg::F32ToBf16)},
                             F32Tensor("v", {5}, Iota(5, 2.0f)), F32Tensor("t", {1, 2, 2}, Iota(4)),
                             F32Tensor("s", {}, {7.0f})}));
  tg::WeightLoader loader(dir.path());
  CHECK(loader.ReadRows("m", 1, 3) == std::vector<float>({4, 5, 6, 7, 8, 9, 10, 11}));
  CHECK(loader.ReadRows("h", 0, 1) == std::vector<float>({0, 1, 2, 3}));
  CHECK(loader.ReadRows("m", 2, 5) == std::vector<float>({8, 9, 10, 11, 0, 0, 0, 0, 0, 0, 0, 0}));
  CHECK(loader.ReadRows("m", 4, 5) == std::vector<float>({0, 0, 0, 0}));
  CHECK(loader.ReadRows("m", 1, 1).empty());
  CHECK(loader.ReadRows("v", 3, 7) == std::vector<float>({6, 8, 0, 0}));
  CHECK(loader.ReadCols("m", 1, 3) == std::vector<float>({1, 2, 5, 6, 9, 10}));
  CHECK(loader.ReadCols("h", 3, 4) == std::vector<float>({3, 7, 11}));
  CHECK(loader.ReadCols("m", 0, 4) == m);
  CHECK(loader.ReadCols("m", 2, 2).empty());
  CHECK(loader.Read("s") == std::vector<float>({7.0f}));
  CHECK(loader.Read("t") == Iota(4));
  CHECK_THROWS_WITH(loader.ReadRows("t", 0, 1), "tensor \"t\" has shape [1, 2, 2]; ReadRows needs a 1-D or 2-D tensor");
  CHECK_THROWS_WITH(loader.ReadCols("v", 0, 1), "tensor \"v\" has shape [5]; ReadCols needs a 2-D tensor");
  CHECK_THROWS_WITH(loader.ReadCols("m", 2, 5), "columns [2, 5) are out of range for shape [3, 4]");
  CHECK_THROWS_WITH(loader.ReadCols("m", -1, 2), "out of range");
  CHECK_THROWS_WITH(loader.ReadRows("m", 2, 1), "rows [2, 1) are not a valid range");
  CHECK_THROWS_WITH(loader.ReadRows("m", -1, 1), "not a valid range");
  CHECK_THROWS_WITH(loader.ReadRows("m", 0, std::numeric_limits<int64_t>::max()), "too large");
}

// The typed reads the CUDA upload uses: 16-bit sources copied as they are, float32
// sources rounded once, slices and vocab padding as in the float32 reads.
TG_TEST(reads_into_16_bit_buffers_without_a_float32_detour) {
  TempDir dir;
  std::vector<float> m = {0.1f, -2.5f, 3.3f, 1e-3f, 7.0f, -0.75f, 65000.0f, 1e-6f, 0.5f, -1.0f, 2.0f, 9.9f};  // [3, 4]
  dir.Write("model.safetensors",
            SafetensorsFile({F32Tensor("f", {3, 4}, m), {"b", "BF16", {3, 4}, U16Bytes(m, tg::F32ToBf16)},
                             {"h", "F16", {3, 4}, U16Bytes(m, tg::F32ToF16)}}));
  tg::WeightLoader loader(dir.path());
  auto bits = [](const std::vector<float>& v, uint16_t (*to)(float)) {
    std::vector<uint16_t> out;
    for (float x : v) out.push_back(to(x));
    return out;
  };
  std::vector<uint16_t> got(12, 0xFFFF);
  loader.ReadInto("b", tg::DType::kBF16, got.data());
  CHECK(got == bits(m, tg::F32ToBf16));
  loader.ReadInto("f", tg::DType::kBF16, got.data());
  CHECK(got == bits(m, tg::F32ToBf16));
  loader.ReadInto("f", tg::DType::kF16, got.data());
  CHECK(got == bits(m, tg::F32ToF16));
  // F16 -> BF16 goes through float32, which holds every half exactly: one rounding.
  loader.ReadInto("h", tg::DType::kBF16, got.data());
  std::vector<float> halves;
  for (float x : m) halves.push_back(tg::F16ToF32(tg::F32ToF16(x)));
  CHECK(got == bits(halves, tg::F32ToBf16));

  CHECK(loader.RowsCount("b", 2, 5) == 12 && loader.ColsCount("b", 1, 3) == 6);
  std::fill(got.begin(), got.end(), 0xFFFF);
  loader.ReadRowsInto("b", 2, 5, tg::DType::kBF16, got.data());  // one real row, two of padding
  std::vector<uint16_t> want = bits({0.5f, -1.0f, 2.0f, 9.9f}, tg::F32ToBf16);
  want.resize(12, 0);
  CHECK(got == want);
  std::vector<uint16_t> cols(6, 0xFFFF);
  loader.ReadColsInto("f", 1, 3, tg::DType::kF16, cols.data());
  CHECK(cols == bits({-2.5f, 3.3f, -0.75f, 65000.0f, -1.0f, 2.0f}, tg::F32ToF16));
  std::vector<float> wide(6);
  loader.ReadColsInto("b", 1, 3, tg::DType::kF32, wide.data());
  CHECK(wide == loader.ReadCols("b", 1, 3));
  CHECK_THROWS_WITH(loader.ReadInto("b", tg::DType::kI32, got.data()), "cannot convert BF16 to I32");
}

// Tensors large enough that the loader splits them over its threads: every element
// lands where a one-piece conversion would put it, rows and columns alike.
TG_TEST(large_reads_split_over_threads_match_element_by_element) {
  TempDir dir;
  const int64_t rows = 1500, cols = 4096;  // 6.1M elements: several pieces of the 2M-element grain
  std::vector<float> m(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < m.size(); ++i) m[i] = static_cast<float>(static_cast<int64_t>(i * 2654435761u % 20001) - 10000) / 997.0f;
  dir.Write("model.safetensors", SafetensorsFile({{"w", "BF16", {rows, cols}, U16Bytes(m, tg::F32ToBf16)}}));
  tg::WeightLoader loader(dir.path());
  std::vector<float> all(m.size());
  loader.ReadInto("w", tg::DType::kF32, all.data());
  size_t wrong = 0;
  for (size_t i = 0; i < m.size(); ++i) wrong += all[i] != tg::Bf16ToF32(tg::F32ToBf16(m[i]));
  CHECK(wrong == 0);
  std::vector<uint16_t> rows16(static_cast<size_t>(1200 * cols));
  loader.ReadRowsInto("w", 100, 1300, tg::DType::kF16, rows16.data());
  wrong = 0;
  for (size_t i = 0; i < rows16.size(); ++i) wrong += rows16[i] != tg::F32ToF16(all[100 * cols + i]);
  CHECK(wrong == 0);
  std::vector<float> cols32(static_cast<size_t>(rows * 2048));
  loader.ReadColsInto("w", 1024, 3072, tg::DType::kF32, cols32.data());
  wrong = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < 2048; ++c) wrong += cols32[r * 2048 + c] != all[r * cols + 1024 + c];
  }
  CHECK(wrong == 0);
}

TG_TEST(opens_a_sharded_index) {
  TempDir dir;
  dir.Write("model-00001-of-00002.safetensors",
            SafetensorsFile({F32Tensor("a", {2}, {1, 2}), F32Tensor("b", {1}, {3})}));
  dir.Write("model-00002-of-00002.safetensors", SafetensorsFile({{"c", "BF16", {2}, U16Bytes({4, 5}, tg::F32ToBf16)}}));
  dir.Write("model.safetensors.index.json",
            "{\"metadata\":{\"total_size\":16},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
            "\"c\":\"model-00002-of-00002.safetensors\",\"b\":\"model-00001-of-00002.safetensors\"}}");
  // A stray model.safetensors is ignored when an index exists.
  dir.Write("model.safetensors", "garbage");
  tg::SafetensorsArchive archive(dir.path());
  CHECK(archive.tensors().size() == 3);
  CHECK(archive.FileNames() ==
        std::vector<std::string>({"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}));
  CHECK(archive.Get("c").file == "model-00002-of-00002.safetensors");
  tg::WeightLoader loader(dir.path());
  CHECK(loader.Read("a") == std::vector<float>({1, 2}));
  CHECK(loader.Read("b") == std::vector<float>({3}));
  CHECK(loader.Read("c") == std::vector<float>({4, 5}));
}

TG_TEST(missing_model_files) {
  TempDir dir;
  std::string expected = "model dir " + dir.path() + " has no model.safetensors or model.safetensors.index.json";
  CHECK_THROWS_WITH(tg::SafetensorsArchive archive(dir.path()), expected.c_str());
  std::string missing = dir.path() + "/does-not-exist";
  CHECK_THROWS_WITH(tg::WeightLoader loader(missing), ("model dir " + missing + " has no model.safetensors").c_str());
}

TG_TEST(rejects_truncated_and_oversized_headers) {
  ExpectSingleFileError("", {"model.safetensors: file is 0 bytes, too short"});
  ExpectSingleFileError("abc", {"model.safetensors: file is 3 bytes"});
  std::string good = SafetensorsFile({F32Tensor("w", {4}, {1, 2, 3, 4})});
  // Cut into the header: the declared length now exceeds the file.
  ExpectSingleFileError(good.substr(0, 20), {"model.safetensors: header length", "exceeds the file (20 bytes)"});
  // Cut into the data: the tensor's offsets now exceed the data section.
  ExpectSingleFileError(good.substr(0, good.size() - 4),
                        {"model.safetensors: tensor \"w\": data_offsets [0, 16] exceed the data section (12 bytes)"});
  ExpectSingleFileError(Le64(std::numeric_limits<uint64_t>::max()) + "{}", {"header length 18446744073709551615 exceeds"});
  std::string huge(8 + 100000008, ' ');
  std::string len = Le64(100000000 + 1);
  huge.replace(0, 8, len);
  ExpectSingleFileError(huge, {"header length 100000001 is over the 100000000-byte limit"});
}

TG_TEST(rejects_bad_header_json) {
  ExpectSingleFileError(RawFile("{\"w\":", ""), {"model.safetensors: header is not valid JSON", "of the header"});
  ExpectSingleFileError(RawFile("[1,2]", ""), {"header is an array, not a JSON object"});
  ExpectSingleFileError(Le64(0), {"header is not valid JSON"});
  ExpectSingleFileError(RawFile("{\"w\":{},\"w\":{}}", ""), {"duplicate key \"w\""});
  ExpectSingleFileError(RawFile("{\"__metadata__\":[]}", ""), {"__metadata__ is an array, not an object of strings"});
  ExpectSingleFileError(RawFile("{\"__metadata__\":{\"n\":1}}", ""), {"__metadata__ \"n\" is a number, not a string"});
  ExpectSingleFileError(RawFile("{\"w\":3}", ""), {"tensor \"w\": entry is a number, not an object"});
}

TG_TEST(rejects_bad_tensor_entries) {
  const std::string data(16, '\0');
  auto file = [&](const std::string& entry) { return RawFile(ValidHeaderFor(entry), data); };
  auto expect = [&](const std::string& entry, const std::string& what) {
    ExpectSingleFileError(file(entry), {"model.safetensors: tensor \"w\": ", what});
  };
  expect("{\"shape\":[4],\"data_offsets\":[0,16]}", "no \"dtype\"");
  expect("{\"dtype\":\"F33\",\"shape\":[4],\"data_offsets\":[0,16]}", "unknown dtype \"F33\"");
  expect("{\"dtype\":32,\"shape\":[4],\"data_offsets\":[0,16]}", "\"dtype\" is a number, not a string");
  expect("{\"dtype\":\"F32\",\"data_offsets\":[0,16]}", "no \"shape\"");
  expect("{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}", "\"shape\" is a number, not an array");
  expect("{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}", "\"shape\" must hold non-negative integers");
  expect("{\"dtype\":\"F32\",\"shape\":[4.0],\"data_offsets\":[0,16]}", "\"shape\" must hold non-negative integers");
  expect("{\"dtype\":\"F32\",\"shape\":[\"4\"],\"data_offsets\":[0,16]}", "\"shape\" must hold non-negative integers");
  expect("{\"dtype\":\"F32\",\"shape\":[4]}", "no \"data_offsets\"");
  expect("{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}", "\"data_offsets\" must be [begin, end]");
  expect("{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16,32]}", "\"data_offsets\" must be [begin, end]");
  expect("{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[-1,16]}", "\"data_offsets\" must be [begin, end]");
  expect("{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,1.6e1]}", "\"data_offsets\" must be [begin, end]");
  expect("{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,0]}", "data_offsets [16, 0] end before they begin");
  expect("{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,20]}",
         "data_offsets [0, 20] exceed the data section (16 bytes)");
  expect("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}", "exceed the data section");
  expect("{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}",
         "data_offsets [0, 16] hold 16 bytes but shape [3] of F32 needs 3 x 4");
  expect("{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,16]}", "shape [2, 2] of BF16 needs 4 x 2");
  // A shape whose element count overflows 64 bits must not wrap around to match.
  expect("{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,16]}", "needs more than 2^64");
  expect("{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}", "needs 4611686018427387904 x 4");
}

TG_TEST(rejects_overlapping_tensors) {
  std::string header =
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
      "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[2,2]}}";
  ExpectSingleFileError(RawFile(header, std::string(16, '\0')),
                        {"model.safetensors: tensor \"b\": data_offsets [4, 12] overlap tensor \"a\" [0, 8]"});
  // Touching ranges, an empty tensor inside another, and a scalar are fine.
  TempDir dir;
  dir.Write("model.safetensors",
            RawFile("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[8,10]},"
                    "\"e\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[4,4]}}",
                    std::string(16, '\0')));
  tg::WeightLoader loader(dir.path());
  CHECK(loader.Read("e").empty());
  CHECK(loader.Read("b") == std::vector<float>({0.0f}));
}

TG_TEST(rejects_bad_indexes) {
  auto shard = [](const std::string& name) { return SafetensorsFile({F32Tensor(name, {1}, {1})}); };
  auto expect = [](const TempDir& dir, const std::vector<std::string>& parts) {
    try {
      tg::SafetensorsArchive archive(dir.path());
      std::printf("  expected an error containing '%s'\n", parts[0].c_str());
      ++tgtest::Failures();
    } catch (const std::runtime_error& e) {
      for (const auto& part : parts) {
        if (std::string(e.what()).find(part) == std::string::npos) {
          std::printf("  message '%s' lacks '%s'\n", e.what(), part.c_str());
          ++tgtest::Failures();
        }
      }
    }
  };
  {
    TempDir dir;
    dir.Write("a.safetensors", shard("x"));
    dir.Write("model.safetensors.index.json", "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"b.safetensors\"}}");
    expect(dir, {dir.File("model.safetensors.index.json") + ": tensor \"y\": mapped to missing file " +
                 dir.File("b.safetensors")});
  }
  {
    TempDir dir;
    dir.Write("a.safetensors", shard("x"));
    dir.Write("model.safetensors.index.json", "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"a.safetensors\"}}");
    expect(dir, {"model.safetensors.index.json: tensor \"y\": mapped to " + dir.File("a.safetensors") +
                 ", which does not hold it"});
  }
  {
    TempDir dir;
    dir.Write("a.safetensors", shard("x"));
    dir.Write("b.safetensors", shard("y"));
    dir.Write("model.safetensors.index.json", "{\"weight_map\":{\"x\":\"b.safetensors\",\"y\":\"b.safetensors\"}}");
    expect(dir, {"tensor \"x\": mapped to " + dir.File("b.safetensors") + ", which does not hold it"});
  }
  {
    TempDir dir;
    dir.Write("a.safetensors", shard("x"));
    dir.Write("b.safetensors", shard("x"));
    dir.Write("model.safetensors.index.json", "{\"weight_map\":{\"x\":\"a.safetensors\",\"z\":\"b.safetensors\"}}");
    expect(dir, {dir.File("b.safetensors") + ": tensor \"x\": also in " + dir.File("a.safetensors")});
  }
  {
    TempDir dir;
    dir.Write("a.safetensors", shard("x"));
    dir.Write("model.safetensors.index.json", "{\"weight_map\":{\"x\":\"../a.safetensors\"}}");
    expect(dir, {"tensor \"x\": mapped to \"../a.safetensors\", which is not a file name inside the model dir"});
  }
  {
    TempDir dir;
    dir.Write("a.safetensors", "bad");
    dir.Write("model.safetensors.index.json", "{\"weight_map\":{\"x\":\"a.safetensors\"}}");
    expect(dir, {dir.File("a.safetensors") + ": file is 3 bytes"});
  }
  {
    TempDir dir;
    dir.Write("model.safetensors.index.json", "{\"weight_map\":{\"x\":3}}");
    expect(dir, {"model.safetensors.index.json: tensor \"x\": weight_map value is a number, not a file name"});
  }
  {
    TempDir dir;
    dir.Write("model.safetensors.index.json", "{\"weight_map\":{}}");
    expect(dir, {"\"weight_map\" lists no tensors"});
  }
  {
    TempDir dir;
    dir.Write("model.safetensors.index.json", "{\"metadata\":{}}");
    expect(dir, {"model.safetensors.index.json: has no \"weight_map\""});
  }
  {
    TempDir dir;
    dir.Write("model.safetensors.index.json", "{\"weight_map\":{\"x\":\"a\"},}");
    expect(dir, {"model.safetensors.index.json: not valid JSON", "at byte 24"});
  }
}

// Random corruption of a valid file must give a clean error or a file that
// reads within bounds; run under -fsanitize=address,undefined to see the latter.
TG_TEST(survives_random_corruption) {
  std::string good = SafetensorsFile({F32Tensor("a", {2, 3}, Iota(6)), {"b", "F16", {4}, U16Bytes(Iota(4), tg::F32ToF16)},
                                      {"c", "BF16", {2, 1}, U16Bytes(Iota(2), tg::F32ToBf16)}});
  size_t header_end = 8;
  for (int i = 7; i >= 0; --i) header_end += static_cast<size_t>(static_cast<unsigned char>(good[i])) << (8 * i);
  TempDir dir;
  std::mt19937 rng(42);
  const std::string alphabet = "0123456789-.,:[]{}\"eE\\ FBI168_";
  int opened = 0, other_errors = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string bytes = good;
    int edits = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < edits && !bytes.empty(); ++k) {
      size_t pos = rng() % std::min(header_end, bytes.size());
      switch (rng() % 4) {
        case 0: bytes[pos] = alphabet[rng() % alphabet.size()]; break;
        case 1: bytes[pos] = static_cast<char>(rng()); break;
        case 2: if (pos >= 8) bytes.erase(pos, 1 + rng() % 3); break;
        default: bytes.resize(rng() % bytes.size()); break;
      }
    }
    dir.Write("model.safetensors", bytes);
    try {
      tg::WeightLoader loader(dir.path());
      tg::SafetensorsArchive archive(dir.path());
      for (const auto& t : archive.tensors()) {
        if (!tg::ConvertsToF32(t.dtype)) continue;
        std::vector<float> v = loader.Read(t.name);
        if (t.shape.size() == 2) loader.ReadCols(t.name, 0, t.shape[1]);
        if (t.shape.size() == 1 || t.shape.size() == 2) loader.ReadRows(t.name, 0, t.shape[0] + 1);
      }
      ++opened;
    } catch (const std::runtime_error& e) {
      if (std::string(e.what()).find("model.safetensors") == std::string::npos) {
        std::printf("  error without the file name: %s\n", e.what());
        ++other_errors;
      }
    } catch (const std::exception& e) {
      std::printf("  unexpected %s\n", e.what());
      ++other_errors;
    }
  }
  CHECK(other_errors == 0);
  CHECK(opened > 0);
}

TG_TEST(opens_stories260k) {
  std::string model = ModelsDir() + "/stories260k";
  tg::SafetensorsArchive archive(model);
  CHECK(archive.tensors().size() == 48);
  const tg::TensorInfo& embed = archive.Get("model.embed_tokens.weight");
  CHECK(embed.dtype == DType::kF32);
  CHECK(embed.shape == std::vector<int64_t>({512, 64}));
  tg::WeightLoader loader(model);
  std::vector<float> w = loader.Read("model.embed_tokens.weight");
  CHECK(w.size() == 512 * 64);
  std::vector<float> rows = loader.ReadRows("model.embed_tokens.weight", 256, 512);
  CHECK(std::equal(rows.begin(), rows.end(), w.begin() + 256 * 64));
  bool finite = true;
  for (float x : w) finite = finite && std::isfinite(x);
  CHECK(finite);
}

TG_TEST_MAIN()
