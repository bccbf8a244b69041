// Collectives between the GPUs of one tensor-parallel group, on device memory and
// enqueued on the caller's CUDA stream (so they run in stream order with the
// forward's kernels and can be captured into CUDA graphs). NCCL implements it,
// loaded at run time (nccl_shim.h). Every rank calls the same collectives in the
// same order with the same sizes.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backend/cuda/elem_type.h"
#include "backend/cuda/kernels.h"

namespace tg {
namespace cuda {

struct GemvExchange;  // gemv.h

class DeviceCommunicator {
 public:
  virtual ~DeviceCommunicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In place: data[i] = sum over ranks of data[i] (`count` elements of `type`).
  virtual void AllReduceSum(void* data, size_t count, ElemType type, cudaStream_t stream) = 0;
  // out = concat over ranks, in rank order, of each rank's `count` elements of `in`.
  virtual void AllGather(const void* in, size_t count, ElemType type, void* out, cudaStream_t stream) = 0;
  // The all-reduce of a row-parallel layer's output `delta` ([rows, hidden] of `type`) and the
  // residual add and RMSNorm after it: residual += sum over ranks of delta, then out =
  // RMSNorm(residual) · weight, as LaunchAddRmsNorm (kernels.h) computes them; `delta` is
  // left reduced or as it was. This default makes the two calls; a communicator may fuse them.
  virtual void AllReduceAddRmsNorm(void* delta, float* residual, const float* weight, int64_t rows, int64_t hidden,
                                   float eps, ElemType type, void* out, cudaStream_t stream) {
    AllReduceSum(delta, static_cast<size_t>(rows * hidden), type, stream);
    LaunchAddRmsNorm(stream, type, residual, delta, weight, nullptr, rows, hidden, eps, true, out);
  }
  // The peer mailboxes through which a decode step's adding GEMVs sum their ranks' products
  // themselves (GemvExchange), or null where the communicator has none (NCCL alone).
  virtual const GemvExchange* gemv_exchange() const { return nullptr; }
};

// The 128 bytes of a fresh ncclUniqueId, made by rank 0 and handed to every rank.
// Throws std::runtime_error naming where NCCL was looked for when it can't be loaded.
std::string NewNcclUniqueId();

// Joins the group named by `unique_id` (from NewNcclUniqueId) as `rank` of
// `world_size` on CUDA device `device`. Blocks until every rank has joined.
std::unique_ptr<DeviceCommunicator> MakeNcclCommunicator(const std::string& unique_id, int rank, int world_size,
                                                         int device);

}  // namespace cuda
}  // namespace tg
