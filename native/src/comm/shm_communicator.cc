// Collectives between rank processes on one machine through a POSIX shared
// memory object: a control block (rendezvous fields and a barrier) followed by
// one data slot per rank. A collective copies each rank's input into its slot,
// meets at a barrier, and lets every rank read all slots in rank order, so all
// ranks compute bit-identical sums. Transfers larger than a slot go in chunks.
//
// Lifetime: rank 0 creates and initialises the object and publishes it by
// writing `magic` last; the others poll for it. Once every rank has attached,
// rank 0 unlinks the name, so nothing is left in /dev/shm whatever happens to
// the processes later; the mappings live until each process unmaps or exits.
//
// Waiting: a short spin, then futex waits on the barrier's generation word
// (process-shared, so oversubscribed cores are not burnt), waking regularly to
// notice a peer process that exited, a rank that gave up, or the peer timeout.
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>

#include "comm/communicator.h"

namespace tg {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kMagic = 0x74672d636f6d6d01ULL;  // "tg-comm", layout version 1
constexpr int kMaxRanks = 64;
constexpr size_t kHeaderBytes = 4096;  // control block, padded so slots start page-aligned
constexpr size_t kSlotAlign = 4096;

struct ControlBlock {
  std::atomic<uint64_t> magic;  // kMagic once rank 0 has initialised everything below
  int32_t world_size;
  uint64_t slot_bytes;
  uint64_t total_bytes;
  std::atomic<int32_t> attached;  // ranks that have attached, rank 0 included
  std::atomic<int32_t> aborted;   // 1 + the rank that gave up, or 0
  std::atomic<int32_t> unlinked;  // rank 0 has removed the name; set after all attached
  std::atomic<int32_t> pids[kMaxRanks];  // each rank's process id, 0 until it attaches
  alignas(64) std::atomic<uint32_t> arrived;     // ranks inside the current barrier
  alignas(64) std::atomic<uint32_t> generation;  // completed barriers; the futex word
};
static_assert(sizeof(ControlBlock) <= kHeaderBytes, "control block outgrew its page");
static_assert(std::atomic<uint32_t>::is_always_lock_free && sizeof(std::atomic<uint32_t>) == 4,
              "the futex word must be a plain 32-bit integer");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "process-shared atomics must be lock-free");

std::string Errno() { return std::strerror(errno); }

std::string Ms(int ms) { return std::to_string(ms) + " ms"; }

// Waits until *word != expected, a wake-up, or `timeout` passes, whichever comes first.
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::microseconds timeout) {
  timespec ts{static_cast<time_t>(timeout.count() / 1000000), static_cast<long>(timeout.count() % 1000000) * 1000};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

bool ProcessExited(pid_t pid) { return pid > 0 && kill(pid, 0) != 0 && errno == ESRCH; }

class ShmCommunicator final : public Communicator {
 public:
  ShmCommunicator(const std::string& name, int rank, int world_size, int timeout_ms,
                  const ShmCommunicatorOptions& options)
      : name_(name), rank_(rank), world_(world_size), peer_timeout_ms_(options.peer_timeout_ms) {
    const std::string path = name.empty() || name[0] != '/' ? "/" + name : name;
    if (path.size() < 2 || path.find('/', 1) != std::string::npos || path.size() > 250) {
      throw std::invalid_argument("tensor-parallel rendezvous \"" + name +
                                  "\": the name must be non-empty, at most 250 characters and contain no '/'");
    }
    if (world_size < 1 || world_size > kMaxRanks || rank < 0 || rank >= world_size) {
      throw std::invalid_argument("tensor-parallel rendezvous \"" + name + "\": rank " + std::to_string(rank) +
                                  " is not valid in a world of " + std::to_string(world_size) + " (at most " +
                                  std::to_string(kMaxRanks) + " ranks)");
    }
    const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    try {
      if (rank == 0) {
        Create(path, options);
      } else {
        Attach(path, deadline, timeout_ms);
      }
      WaitForAllRanks(deadline, timeout_ms);
      if (created_) {
        shm_unlink(path.c_str());
        control_->unlinked.store(1, std::memory_order_release);
      }
      // So that no rank returns while the name could still be found.
      WaitUntil([&] { return control_->unlinked.load(std::memory_order_acquire) != 0; }, deadline, timeout_ms,
                "rank 0 to remove the name");
    } catch (...) {
      if (created_) shm_unlink(path.c_str());
      Unmap();
      throw;
    }
  }

  ~ShmCommunicator() override { Unmap(); }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  void AllReduceSum(float* data, size_t count) override {
    for (size_t offset = 0; offset < count; offset += slot_floats_) {
      const size_t n = std::min(slot_floats_, count - offset);
      float* out = data + offset;
      std::memcpy(Slot(rank_), out, n * sizeof(float));
      Barrier();
      // The same additions in the same order on every rank: ((s0 + s1) + s2) + ...
      std::memcpy(out, Slot(0), n * sizeof(float));
      for (int r = 1; r < world_; ++r) {
        const float* slot = Slot(r);
        for (size_t i = 0; i < n; ++i) out[i] += slot[i];
      }
      Barrier();  // nobody refills a slot before everyone has read it
    }
  }

  void AllGather(const float* in, size_t count, float* out) override {
    for (size_t offset = 0; offset < count; offset += slot_floats_) {
      const size_t n = std::min(slot_floats_, count - offset);
      std::memcpy(Slot(rank_), in + offset, n * sizeof(float));
      Barrier();
      // memmove: `in` may be this rank's own part of `out`.
      for (int r = 0; r < world_; ++r) std::memmove(out + r * count + offset, Slot(r), n * sizeof(float));
      Barrier();
    }
  }

  // Sense reversal by generation: the last rank to arrive resets the count and
  // then advances the generation that the others wait on.
  void Barrier() override {
    CheckNotAborted();
    const uint32_t generation = control_->generation.load(std::memory_order_acquire);
    if (control_->arrived.fetch_add(1, std::memory_order_acq_rel) == static_cast<uint32_t>(world_ - 1)) {
      control_->arrived.store(0, std::memory_order_relaxed);
      control_->generation.store(generation + 1, std::memory_order_release);
      FutexWakeAll(&control_->generation);
      return;
    }
    WaitForGenerationAfter(generation);
  }

 private:
  void Create(const std::string& path, const ShmCommunicatorOptions& options) {
    shm_unlink(path.c_str());  // a stale object of a crashed launch with the same id
    fd_ = shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd_ < 0) Fail("rank 0 could not create the shared memory object: " + Errno());
    uint64_t slot_bytes = options.buffer_bytes / static_cast<size_t>(world_) / kSlotAlign * kSlotAlign;
    slot_bytes = std::max<uint64_t>(slot_bytes, kSlotAlign);
    const uint64_t total = kHeaderBytes + slot_bytes * static_cast<uint64_t>(world_);
    // Reserve the memory now, so a full /dev/shm is a clear error here rather than SIGBUS later.
    created_ = true;
    if (ftruncate(fd_, static_cast<off_t>(total)) != 0) Fail("rank 0 could not size the shared memory object: " + Errno());
    if (int err = posix_fallocate(fd_, 0, static_cast<off_t>(total))) {
      Fail("rank 0 could not reserve " + std::to_string(total >> 20) + " MiB in /dev/shm: " + std::strerror(err));
    }
    Map(total);
    if (!base_) Fail("rank 0 could not map the shared memory object: " + Errno());
    control_ = new (base_) ControlBlock();
    control_->world_size = world_;
    control_->slot_bytes = slot_bytes;
    control_->total_bytes = total;
    control_->pids[0].store(getpid(), std::memory_order_relaxed);
    control_->attached.store(1, std::memory_order_relaxed);
    control_->magic.store(kMagic, std::memory_order_release);
    slot_floats_ = slot_bytes / sizeof(float);
  }

  void Attach(const std::string& path, Clock::time_point deadline, int timeout_ms) {
    auto wait_for_rank0 = [&] {
      if (Clock::now() > deadline) {
        Fail("rank " + std::to_string(rank_) + " timed out after " + Ms(timeout_ms) + " waiting for rank 0");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    };
    while ((fd_ = shm_open(path.c_str(), O_RDWR, 0)) < 0) {
      if (errno != ENOENT) Fail("rank " + std::to_string(rank_) + " could not open the shared memory object: " + Errno());
      wait_for_rank0();
    }
    struct stat st {};
    while (true) {  // rank 0 sizes the object in one step after creating it
      if (fstat(fd_, &st) != 0) Fail("could not stat the shared memory object: " + Errno());
      if (static_cast<size_t>(st.st_size) >= kHeaderBytes) break;
      wait_for_rank0();
    }
    Map(static_cast<size_t>(st.st_size));
    if (!base_) Fail("rank " + std::to_string(rank_) + " could not map the shared memory object: " + Errno());
    control_ = static_cast<ControlBlock*>(base_);
    while (control_->magic.load(std::memory_order_acquire) != kMagic) wait_for_rank0();
    if (control_->world_size != world_) {
      Abort();  // the group can never complete: let rank 0 fail now rather than at its timeout
      Fail("rank " + std::to_string(rank_) + " was started with world size " + std::to_string(world_) +
           " but rank 0 with world size " + std::to_string(control_->world_size));
    }
    if (control_->total_bytes != mapped_bytes_) {
      Fail("the shared memory object has an unexpected size (a stale object of another launch?)");
    }
    int32_t no_pid = 0;
    if (!control_->pids[rank_].compare_exchange_strong(no_pid, getpid())) {
      Fail("rank " + std::to_string(rank_) + " is already attached (two shards started with the same rank?)");
    }
    slot_floats_ = control_->slot_bytes / sizeof(float);
    control_->attached.fetch_add(1, std::memory_order_acq_rel);
  }

  void WaitForAllRanks(Clock::time_point deadline, int timeout_ms) {
    WaitUntil([&] { return control_->attached.load(std::memory_order_acquire) >= world_; }, deadline, timeout_ms,
              "the other ranks");
  }

  // Polls `done` during the rendezvous, failing on timeout, on a rank that gave
  // up and on a rank whose process exited.
  template <class Done>
  void WaitUntil(const Done& done, Clock::time_point deadline, int timeout_ms, const char* what) {
    while (!done()) {
      CheckNotAborted();
      CheckPeersAlive();
      if (Clock::now() > deadline) {
        Abort();
        Fail("rank " + std::to_string(rank_) + " timed out after " + Ms(timeout_ms) + " waiting for " + what + " (" +
             std::to_string(control_->attached.load()) + " of " + std::to_string(world_) + " attached)");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  void WaitForGenerationAfter(uint32_t generation) {
    for (int i = 0; i < 256; ++i) {
      if (control_->generation.load(std::memory_order_acquire) != generation) return;
      CpuRelax();
    }
    const Clock::time_point start = Clock::now();
    const Clock::time_point deadline = start + std::chrono::milliseconds(peer_timeout_ms_);
    Clock::time_point next_liveness_check = start + std::chrono::milliseconds(100);
    while (control_->generation.load(std::memory_order_acquire) == generation) {
      CheckNotAborted();
      const Clock::time_point now = Clock::now();
      if (now >= next_liveness_check) {
        CheckPeersAlive();
        next_liveness_check = now + std::chrono::milliseconds(100);
      }
      if (now > deadline) {
        Abort();
        throw std::runtime_error("tensor-parallel communicator \"" + name_ + "\": rank " + std::to_string(rank_) +
                                 " waited " + Ms(peer_timeout_ms_) +
                                 " in a collective for its peers; one has probably died or hung");
      }
      FutexWait(&control_->generation, generation, std::chrono::milliseconds(20));
    }
  }

  void CheckPeersAlive() {
    for (int r = 0; r < world_; ++r) {
      const pid_t pid = control_->pids[r].load(std::memory_order_relaxed);
      if (r == rank_ || !ProcessExited(pid)) continue;
      Abort();
      throw std::runtime_error("tensor-parallel communicator \"" + name_ + "\": rank " + std::to_string(rank_) +
                               "'s peer rank " + std::to_string(r) + " (pid " + std::to_string(pid) + ") has exited");
    }
  }

  void CheckNotAborted() const {
    const int32_t aborted = control_->aborted.load(std::memory_order_acquire);
    if (aborted == 0) return;
    throw std::runtime_error("tensor-parallel communicator \"" + name_ + "\": rank " + std::to_string(aborted - 1) +
                             " gave up (see its error), so rank " + std::to_string(rank_) + " stops too");
  }

  // Tells the peers to stop waiting: the group can no longer complete a collective.
  void Abort() {
    int32_t none = 0;
    control_->aborted.compare_exchange_strong(none, rank_ + 1, std::memory_order_acq_rel);
    FutexWakeAll(&control_->generation);
  }

  void Map(size_t bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    close(fd_);  // the mapping keeps the object alive
    fd_ = -1;
    if (p == MAP_FAILED) return;
    base_ = p;
    mapped_bytes_ = bytes;
  }

  void Unmap() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    if (base_) munmap(base_, mapped_bytes_);
    base_ = nullptr;
    control_ = nullptr;
  }

  [[noreturn]] void Fail(const std::string& why) const {
    throw std::runtime_error("tensor-parallel rendezvous \"" + name_ + "\": " + why);
  }

  float* Slot(int r) const {
    return reinterpret_cast<float*>(static_cast<char*>(base_) + kHeaderBytes + r * control_->slot_bytes);
  }

  std::string name_;
  int rank_;
  int world_;
  int peer_timeout_ms_;
  int fd_ = -1;
  bool created_ = false;  // rank 0, once it owns the name (and must unlink it)
  void* base_ = nullptr;
  size_t mapped_bytes_ = 0;
  ControlBlock* control_ = nullptr;
  size_t slot_floats_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> MakeShmCommunicator(const std::string& name, int rank, int world_size, int timeout_ms,
                                                  const ShmCommunicatorOptions& options) {
  return std::make_unique<ShmCommunicator>(name, rank, world_size, timeout_ms, options);
}

std::unique_ptr<Communicator> MakeShmCommunicator(const std::string& name, int rank, int world_size,
                                                  int timeout_ms) {
  return MakeShmCommunicator(name, rank, world_size, timeout_ms, ShmCommunicatorOptions{});
}

}  // namespace tg
