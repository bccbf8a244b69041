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

// A positive count.
class PerDeviceCount {
 public:
  // The count for the current device: compute(device) (at least 1) the first time, the
  // cached answer after. Two threads that both find it unknown compute the same answer, so
  // no lock is needed. Devices past kMaxDevices compute it every time.
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

// A yes/no fact, kept as a count of 1 (no) or 2 (yes).
class PerDeviceFlag {
 public:
  template <typename Compute>
  bool Get(Compute compute) {
    return answers_.Get([&](int device) { return compute(device) ? kYes : kNo; }) == kYes;
  }

 private:
  enum : int { kNo = 1, kYes = 2 };
  PerDeviceCount answers_;
};

}  // namespace cuda
}  // namespace tg
