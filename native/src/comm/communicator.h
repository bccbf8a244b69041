// Collective operations between the ranks of one tensor-parallel group. The
// CPU backend implements it over POSIX shared memory; the CUDA backend will
// implement it over NCCL. Every rank must call the same collectives in the same
// order with the same sizes.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

namespace tg {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // data[i] = sum over ranks of data[i]; every rank gets the result.
  virtual void AllReduceSum(float* data, size_t count) = 0;
  // out = concat over ranks (in rank order) of each rank's `count` floats.
  virtual void AllGather(const float* in, size_t count, float* out) = 0;
  virtual void Barrier() = 0;
};

// World of one: every collective is the identity.
std::unique_ptr<Communicator> MakeLocalCommunicator();

// Ranks in separate processes on one machine, rendezvous through the POSIX shared
// memory object `name` (derived from the launch id so two servers never collide).
// Rank 0 creates it; the others wait up to `timeout_ms` for it to appear, and
// every rank returns only once all have attached and the name is removed again
// (so nothing is left in /dev/shm). Throws std::runtime_error with a clear
// message on failure or timeout. Collectives throw too when a peer process
// exits or stops answering for `peer_timeout_ms`, instead of hanging.
std::unique_ptr<Communicator> MakeShmCommunicator(const std::string& name, int rank, int world_size,
                                                  int timeout_ms);

struct ShmCommunicatorOptions {
  // Total shared buffer, split evenly between the ranks; larger collectives go
  // through it in chunks. Only rank 0's value counts (it creates the object).
  size_t buffer_bytes = size_t{32} << 20;
  // How long a collective waits for the other ranks before it concludes that a
  // peer has died and throws. A peer process seen to exit fails it sooner.
  int peer_timeout_ms = 60000;
};
std::unique_ptr<Communicator> MakeShmCommunicator(const std::string& name, int rank, int world_size,
                                                  int timeout_ms, const ShmCommunicatorOptions& options);

}  // namespace tg
