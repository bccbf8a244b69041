// The communicator of a world of one (no tensor parallelism): every collective
// is the identity, so the engine calls collectives without special cases.
#include <cstring>

#include "comm/communicator.h"

namespace tg {
namespace {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void AllReduceSum(float*, size_t) override {}
  void AllGather(const float* in, size_t count, float* out) override {
    if (in != out && count > 0) std::memmove(out, in, count * sizeof(float));
  }
  void Barrier() override {}
};

}  // namespace

std::unique_ptr<Communicator> MakeLocalCommunicator() { return std::make_unique<LocalCommunicator>(); }

}  // namespace tg
