// WeightLoader: typed reads (whole, row slices, column slices) over a SafetensorsArchive.
#include "model/weight_loader.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "backend/cpu/thread_pool.h"
#include "core/dtype.h"
#include "core/safetensors.h"

namespace tg {

namespace {

[[noreturn]] void Fail(const SafetensorsArchive& archive, const std::string& name, const std::string& what) {
  throw std::runtime_error("model dir " + archive.model_dir() + ": tensor \"" + name + "\" " + what);
}

const TensorInfo& Convertible(const SafetensorsArchive& archive, const std::string& name) {
  const TensorInfo& t = archive.Get(name);
  if (!ConvertsToF32(t.dtype)) {
    Fail(archive, name, std::string("has dtype ") + DTypeName(t.dtype) + "; only F32, BF16 and F16 can be read as float32");
  }
  return t;
}

// Elements per thread below which a conversion stays on one thread (~4 MB of bf16).
constexpr int64_t kConvertGrain = int64_t{1} << 21;

// ConvertFloats over the loader's threads: the copy out of the memory-mapped file (page
// faults included) and the conversion are per-element work that splits evenly.
void ConvertInParallel(ThreadPool& pool, DType from, const unsigned char* src, size_t count, DType to, void* dst) {
  const size_t in_size = DTypeSize(from), out_size = DTypeSize(to);
  pool.ParallelFor(static_cast<int64_t>(count), kConvertGrain, [&](int64_t begin, int64_t end) {
    ConvertFloats(from, src + begin * in_size, static_cast<size_t>(end - begin), to,
                  static_cast<char*>(dst) + begin * out_size);
  });
}

// a * b as a float count, or an error when it cannot be allocated.
size_t CheckedCount(const SafetensorsArchive& archive, const std::string& name, uint64_t a, uint64_t b) {
  uint64_t n = 0;
  if (__builtin_mul_overflow(a, b, &n) || n > SIZE_MAX / sizeof(float)) Fail(archive, name, "slice is too large");
  return static_cast<size_t>(n);
}

}  // namespace

// Up to 16 threads: loading is bound by memory and the page cache well before that.
WeightLoader::WeightLoader(const std::string& model_dir)
    : archive_(std::make_unique<SafetensorsArchive>(model_dir)),
      pool_(std::make_unique<ThreadPool>(static_cast<int>(std::min(16u, std::max(1u, std::thread::hardware_concurrency()))))) {}

WeightLoader::~WeightLoader() = default;

bool WeightLoader::Has(const std::string& name) const { return archive_->Find(name) != nullptr; }

std::vector<int64_t> WeightLoader::Shape(const std::string& name) const { return archive_->Get(name).shape; }

std::string WeightLoader::Dtype(const std::string& name) const { return DTypeName(archive_->Get(name).dtype); }

std::vector<float> WeightLoader::Read(const std::string& name) const {
  const TensorInfo& t = Convertible(*archive_, name);
  std::vector<float> out(CheckedCount(*archive_, name, t.numel, 1));
  ReadInto(name, DType::kF32, out.data());
  return out;
}

std::vector<float> WeightLoader::ReadRows(const std::string& name, int64_t begin, int64_t end) const {
  std::vector<float> out(RowsCount(name, begin, end));
  ReadRowsInto(name, begin, end, DType::kF32, out.data());
  return out;
}

std::vector<float> WeightLoader::ReadCols(const std::string& name, int64_t begin, int64_t end) const {
  std::vector<float> out(ColsCount(name, begin, end));
  ReadColsInto(name, begin, end, DType::kF32, out.data());
  return out;
}

void WeightLoader::ReadInto(const std::string& name, DType to, void* dst) const {
  const TensorInfo& t = Convertible(*archive_, name);
  ConvertInParallel(*pool_, t.dtype, t.data, CheckedCount(*archive_, name, t.numel, 1), to, dst);
}

size_t WeightLoader::RowsCount(const std::string& name, int64_t begin, int64_t end) const {
  const TensorInfo& t = Convertible(*archive_, name);
  if (t.shape.size() != 1 && t.shape.size() != 2) {
    Fail(*archive_, name, "has shape " + ShapeString(t.shape) + "; ReadRows needs a 1-D or 2-D tensor");
  }
  if (begin < 0 || end < begin) {
    Fail(*archive_, name, "rows [" + std::to_string(begin) + ", " + std::to_string(end) + ") are not a valid range");
  }
  uint64_t cols = t.shape.size() == 2 ? static_cast<uint64_t>(t.shape[1]) : 1;
  return CheckedCount(*archive_, name, static_cast<uint64_t>(end - begin), cols);
}

void WeightLoader::ReadRowsInto(const std::string& name, int64_t begin, int64_t end, DType to, void* dst) const {
  const size_t count = RowsCount(name, begin, end);
  const TensorInfo& t = archive_->Get(name);
  uint64_t rows = static_cast<uint64_t>(t.shape[0]);
  uint64_t cols = t.shape.size() == 2 ? static_cast<uint64_t>(t.shape[1]) : 1;
  // Rows at or past `rows` are zero: the padding of a vocab split across ranks.
  uint64_t first = static_cast<uint64_t>(begin);
  uint64_t stop = std::min(static_cast<uint64_t>(end), rows);
  size_t present = first < stop ? static_cast<size_t>((stop - first) * cols) : 0;
  if (present > 0) ConvertInParallel(*pool_, t.dtype, t.data + first * cols * DTypeSize(t.dtype), present, to, dst);
  std::memset(static_cast<char*>(dst) + present * DTypeSize(to), 0, (count - present) * DTypeSize(to));
}

size_t WeightLoader::ColsCount(const std::string& name, int64_t begin, int64_t end) const {
  const TensorInfo& t = Convertible(*archive_, name);
  if (t.shape.size() != 2) Fail(*archive_, name, "has shape " + ShapeString(t.shape) + "; ReadCols needs a 2-D tensor");
  uint64_t cols = static_cast<uint64_t>(t.shape[1]);
  if (begin < 0 || end < begin || static_cast<uint64_t>(end) > cols) {
    Fail(*archive_, name, "columns [" + std::to_string(begin) + ", " + std::to_string(end) + ") are out of range for shape " +
                              ShapeString(t.shape));
  }
  return CheckedCount(*archive_, name, static_cast<uint64_t>(t.shape[0]), static_cast<uint64_t>(end - begin));
}

void WeightLoader::ReadColsInto(const std::string& name, int64_t begin, int64_t end, DType to, void* dst) const {
  ColsCount(name, begin, end);
  const TensorInfo& t = archive_->Get(name);
  uint64_t rows = static_cast<uint64_t>(t.shape[0]);
  uint64_t cols = static_cast<uint64_t>(t.shape[1]);
  size_t width = static_cast<size_t>(end - begin);
  if (width == 0) return;
  size_t in_size = DTypeSize(t.dtype), out_size = DTypeSize(to);
  const int64_t grain = std::max<int64_t>(1, kConvertGrain / static_cast<int64_t>(width));
  pool_->ParallelFor(static_cast<int64_t>(rows), grain, [&](int64_t r0, int64_t r1) {
    for (uint64_t r = static_cast<uint64_t>(r0); r < static_cast<uint64_t>(r1); ++r) {
      ConvertFloats(t.dtype, t.data + (r * cols + static_cast<uint64_t>(begin)) * in_size, width, to,
                    static_cast<char*>(dst) + r * width * out_size);
    }
  });
}

}  // namespace tg
