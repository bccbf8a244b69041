// Reads a model's tensors by name from its safetensors files (memory-mapped,
// headers validated), whole or as a Megatron slice: as float32 vectors (the CPU
// backend), or converted straight into a caller's buffer as F32, BF16 or F16 (the
// CUDA backend's upload, which keeps 16-bit weights 16-bit all the way).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace tg {

class SafetensorsArchive;
class ThreadPool;

class WeightLoader {
 public:
  // Opens `model_dir`/model.safetensors.index.json if present, else model.safetensors.
  // Throws std::runtime_error naming the directory, file and tensor on any problem.
  explicit WeightLoader(const std::string& model_dir);
  ~WeightLoader();

  bool Has(const std::string& name) const;
  std::vector<int64_t> Shape(const std::string& name) const;
  // Dtype name as in the safetensors header ("F32", "BF16", "F16", ...).
  std::string Dtype(const std::string& name) const;

  // The whole tensor as float32, row-major.
  std::vector<float> Read(const std::string& name) const;
  // Rows [begin, end) of a 1-D or 2-D tensor (the column-parallel split of an [out, in]
  // weight, or the vocab split of an embedding). Rows past the end are zero (vocab padding).
  std::vector<float> ReadRows(const std::string& name, int64_t begin, int64_t end) const;
  // Columns [begin, end) of a 2-D tensor (the row-parallel split of an [out, in] weight).
  std::vector<float> ReadCols(const std::string& name, int64_t begin, int64_t end) const;

  // The same three reads into `dst` as `to` (kF32, kBF16 or kF16), which must hold
  // ReadCount(...) elements. The vectors above are these with `to` = kF32. Large reads
  // split over the loader's threads, so one loader serves one caller at a time.
  void ReadInto(const std::string& name, DType to, void* dst) const;
  void ReadRowsInto(const std::string& name, int64_t begin, int64_t end, DType to, void* dst) const;
  void ReadColsInto(const std::string& name, int64_t begin, int64_t end, DType to, void* dst) const;
  // Elements a ReadRows (rows != 0: end - begin rows) or ReadCols read yields; checks the range.
  size_t RowsCount(const std::string& name, int64_t begin, int64_t end) const;
  size_t ColsCount(const std::string& name, int64_t begin, int64_t end) const;

 private:
  std::unique_ptr<SafetensorsArchive> archive_;
  std::unique_ptr<ThreadPool> pool_;  // the bulk reads' conversion threads
};

}  // namespace tg
