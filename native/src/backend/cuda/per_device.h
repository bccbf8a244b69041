// A fact about a CUDA device that costs runtime queries to find (yes/no: whether kernels may
// launch with PDL, whether the Hopper kernels run; a count: how many clusters of a kernel fit
// at once): computed once per device, on first use from that device, and cached for every
// later call, including ones during graph capture.
#pragma once
#include <cuda_runtime.h>

#include <atomic>

#include "backend/cuda/cuda_check.h"

namespace tg {
namespace cuda {

class PerDeviceFlag {
 public:
  // The flag for the current device: compute(device) the first time, the cached answer
  // after. Two threads that both find it unknown compute the same answer, so no lock is
  // needed. Devices past kMaxDevices get false.
  template <typename Compute>
  bool Get(Compute compute) {
    int device = 0;
    TG_CUDA_CHECK(cudaGetDevice(&device));
    if (device < 0 || device >= kMaxDevices) return false;
    int known = state_[device].load(std::memory_order_relaxed);
    if (known == kUnknown) {
      known = compute(device) ? kYes : kNo;
      state_[device].store(known, std::memory_order_relaxed);
    }
    return known == kYes;
  }

 private:
  static constexpr int kMaxDevices = 64;
  enum : int { kUnknown = 0, kNo, kYes };
  std::atomic<int> state_[kMaxDevices] = {};
};

// The same for a positive count.
class PerDeviceCount {
 public:
  // compute(device) must return at least 1. Devices past kMaxDevices compute it every time.
  template <typename Compute>
  int Get(Compute compute) {
    int device = 0;
    TG_CUDA_CHECK(cudaGetDevice(&device));
    if (device < 0 || device >= kMaxDevices) return compute(device);
    int known = count_[device].load(std::memory_order_relaxed);
    if (known == 0) {
      known = compute(device);
      count_[device].store(known, std::memory_order_relaxed);
    }
    return known;
  }

 private:
  static constexpr int kMaxDevices = 64;
  std::atomic<int> count_[kMaxDevices] = {};  // 0: not known yet
};

}  // namespace cuda
}  // namespace tg
