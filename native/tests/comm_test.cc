// Tests of the communicators. The shared-memory one runs its ranks as forked
// child processes, as the shards are in production.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "test_util.h"

using tg::Communicator;
using tg::ShmCommunicatorOptions;

namespace {

std::string UniqueName() {
  static int counter = 0;
  return "tg-comm-test-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
}

bool ShmExists(const std::string& name) { return access(("/dev/shm/" + name).c_str(), F_OK) == 0; }

// Runs `body(rank)` in `world` child processes and returns their exit codes in
// rank order (0: no CHECK failed and nothing threw). Children are reaped as
// they exit, so a peer sees a dead rank as gone rather than as a zombie.
std::vector<int> RunRanks(int world, const std::function<void(int)>& body) {
  std::fflush(stdout);
  std::vector<pid_t> pids;
  for (int rank = 0; rank < world; ++rank) {
    pid_t pid = fork();
    if (pid == 0) {
      int before = tgtest::Failures();
      try {
        body(rank);
      } catch (const std::exception& e) {
        std::printf("  rank %d threw: %s\n", rank, e.what());
        ++tgtest::Failures();
      }
      std::fflush(stdout);
      _exit(tgtest::Failures() == before ? 0 : 1);
    }
    pids.push_back(pid);
  }
  std::vector<int> codes(static_cast<size_t>(world), -1);
  for (int left = world; left > 0; --left) {
    int status = 0;
    pid_t pid = wait(&status);
    for (int rank = 0; rank < world; ++rank) {
      if (pids[static_cast<size_t>(rank)] == pid) codes[static_cast<size_t>(rank)] = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    }
  }
  return codes;
}

bool AllZero(const std::vector<int>& codes) {
  for (int c : codes) if (c != 0) return false;
  return true;
}

// A value that is not exactly representable in sums, so the order of additions shows.
float Value(int rank, size_t i) { return 0.1f * static_cast<float>(rank + 1) + 1e-3f * static_cast<float>(i % 977); }

void CheckAllReduce(int world, size_t count, const ShmCommunicatorOptions& options) {
  const std::string name = UniqueName();
  std::vector<int> codes = RunRanks(world, [&](int rank) {
    auto comm = tg::MakeShmCommunicator(name, rank, world, 5000, options);
    CHECK(!ShmExists(name));
    CHECK(comm->rank() == rank && comm->world_size() == world);
    std::vector<float> data(count);
    for (size_t i = 0; i < count; ++i) data[i] = Value(rank, i);
    auto start = std::chrono::steady_clock::now();
    comm->AllReduceSum(data.data(), count);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    bool exact = true;
    for (size_t i = 0; i < count; ++i) {
      float expected = Value(0, i);
      for (int r = 1; r < world; ++r) expected += Value(r, i);
      exact = exact && data[i] == expected;  // bit-identical: same order of additions everywhere
    }
    CHECK(exact);
    if (rank == 0 && count >= (size_t{1} << 20)) {
      std::printf("  all-reduce of %zu floats over %d ranks: %.1f ms\n", count, world, ms);
    }
  });
  CHECK(AllZero(codes));
  CHECK(!ShmExists(name));
}

}  // namespace

TG_TEST(local_communicator_is_the_identity) {
  auto comm = tg::MakeLocalCommunicator();
  CHECK(comm->rank() == 0 && comm->world_size() == 1);
  std::vector<float> data = {1.0f, 2.0f, 3.0f};
  comm->AllReduceSum(data.data(), data.size());
  CHECK((data == std::vector<float>{1.0f, 2.0f, 3.0f}));
  std::vector<float> out(3);
  comm->AllGather(data.data(), data.size(), out.data());
  CHECK(out == data);
  comm->AllGather(out.data(), out.size(), out.data());
  CHECK(out == data);
  comm->Barrier();
}

TG_TEST(all_reduce_two_ranks) { CheckAllReduce(2, 1000, {}); }

TG_TEST(all_reduce_four_ranks_in_chunks) {
  ShmCommunicatorOptions small;
  small.buffer_bytes = 4 * 16384;  // 4096 floats a slot, so 100000 floats take 25 chunks
  CheckAllReduce(4, 100000, small);
  CheckAllReduce(4, 4096, small);  // exactly one slot
  CheckAllReduce(3, 1, small);
}

TG_TEST(all_reduce_larger_than_the_default_slot) {
  CheckAllReduce(2, (size_t{16} << 20) / sizeof(float) * 5 / 4, {});
}

TG_TEST(all_gather_in_rank_order) {
  ShmCommunicatorOptions small;
  small.buffer_bytes = 4 * 4096;  // 1024 floats a slot
  const std::string name = UniqueName();
  const int world = 4;
  const size_t count = 2500;
  std::vector<int> codes = RunRanks(world, [&](int rank) {
    auto comm = tg::MakeShmCommunicator(name, rank, world, 5000, small);
    std::vector<float> in(count);
    for (size_t i = 0; i < count; ++i) in[i] = Value(rank, i);
    std::vector<float> out(count * world, -1.0f);
    comm->AllGather(in.data(), count, out.data());
    bool ok = true;
    for (int r = 0; r < world; ++r) {
      for (size_t i = 0; i < count; ++i) ok = ok && out[r * count + i] == Value(r, i);
    }
    CHECK(ok);
    // In place: this rank's part already sits in the output.
    std::vector<float> in_place(count * world, 0.0f);
    for (size_t i = 0; i < count; ++i) in_place[rank * count + i] = Value(rank, i) * 2.0f;
    comm->AllGather(in_place.data() + rank * count, count, in_place.data());
    ok = true;
    for (int r = 0; r < world; ++r) {
      for (size_t i = 0; i < count; ++i) ok = ok && in_place[r * count + i] == Value(r, i) * 2.0f;
    }
    CHECK(ok);
  });
  CHECK(AllZero(codes));
}

TG_TEST(barrier_holds_every_rank_until_all_arrive) {
  // A counter shared by the forked children outside the communicator.
  auto* counter = static_cast<std::atomic<int>*>(
      mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (counter) std::atomic<int>(0);
  const std::string name = UniqueName();
  const int world = 4, rounds = 500;
  std::vector<int> codes = RunRanks(world, [&](int rank) {
    auto comm = tg::MakeShmCommunicator(name, rank, world, 5000);
    auto start = std::chrono::steady_clock::now();
    bool ok = true;
    for (int round = 0; round < rounds; ++round) {
      counter->fetch_add(1);
      comm->Barrier();
      ok = ok && counter->load() == (round + 1) * world;
      comm->Barrier();
    }
    CHECK(ok);
    double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    if (rank == 0) std::printf("  %d ranks: %.1f us per barrier\n", world, us / (2 * rounds));
  });
  CHECK(AllZero(codes));
  munmap(counter, sizeof(std::atomic<int>));
}

TG_TEST(rendezvous_times_out_without_rank_0) {
  const std::string name = UniqueName();
  CHECK_THROWS_WITH(tg::MakeShmCommunicator(name, 1, 2, 200),
                    ("tensor-parallel rendezvous \"" + name + "\": rank 1 timed out after 200 ms waiting for rank 0")
                        .c_str());
}

TG_TEST(rendezvous_rejects_a_different_world_size) {
  const std::string name = UniqueName();
  std::vector<int> codes = RunRanks(2, [&](int rank) {
    if (rank == 0) {
      CHECK_THROWS_WITH(tg::MakeShmCommunicator(name, 0, 2, 5000), "rank 1 gave up (see its error), so rank 0 stops too");
    } else {
      CHECK_THROWS_WITH(tg::MakeShmCommunicator(name, 1, 3, 5000),
                        "rank 1 was started with world size 3 but rank 0 with world size 2");
    }
  });
  CHECK(AllZero(codes));
  CHECK(!ShmExists(name));
}

TG_TEST(rendezvous_rejects_a_rank_twice) {
  auto* duplicates = static_cast<std::atomic<int>*>(
      mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (duplicates) std::atomic<int>(0);
  const std::string name = UniqueName();
  // Three processes claim ranks 0, 1 and 1 of a world of 3: one rank-1 is refused,
  // and the group never completes.
  std::vector<int> codes = RunRanks(3, [&](int process) {
    try {
      tg::MakeShmCommunicator(name, process == 0 ? 0 : 1, 3, 1000);
    } catch (const std::exception& e) {
      if (std::string(e.what()).find("rank 1 is already attached") != std::string::npos) duplicates->fetch_add(1);
      return;
    }
    CHECK(false);
  });
  CHECK(AllZero(codes));
  CHECK(duplicates->load() == 1);
  CHECK(!ShmExists(name));
  munmap(duplicates, sizeof(std::atomic<int>));
  CHECK_THROWS_WITH(tg::MakeShmCommunicator("a/b", 0, 1, 100), "contain no '/'");
  CHECK_THROWS_WITH(tg::MakeShmCommunicator(name, 2, 2, 100), "rank 2 is not valid in a world of 2");
}

TG_TEST(a_dead_peer_fails_the_collective) {
  const std::string name = UniqueName();
  ShmCommunicatorOptions options;
  options.peer_timeout_ms = 3000;
  auto start = std::chrono::steady_clock::now();
  std::vector<int> codes = RunRanks(3, [&](int rank) {
    auto comm = tg::MakeShmCommunicator(name, rank, 3, 5000, options);
    if (rank == 2) _exit(0);  // dies without a word
    float x = 1.0f;
    // Whichever survivor notices first says so; the other is told that it gave up.
    std::string message;
    try {
      comm->AllReduceSum(&x, 1);
    } catch (const std::exception& e) {
      message = e.what();
    }
    CHECK(message.find("peer rank 2 (pid ") != std::string::npos || message.find("gave up") != std::string::npos);
    if (message.find("has exited") == std::string::npos && message.find("gave up") == std::string::npos) {
      std::printf("  unexpected message: %s\n", message.c_str());
    }
  });
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  CHECK(AllZero(codes));
  CHECK(ms < 2000);  // seen as exited, not left to the peer timeout
}

TG_TEST(a_hung_peer_times_out) {
  const std::string name = UniqueName();
  ShmCommunicatorOptions options;
  options.peer_timeout_ms = 300;
  std::vector<int> codes = RunRanks(2, [&](int rank) {
    auto comm = tg::MakeShmCommunicator(name, rank, 2, 5000, options);
    if (rank == 1) {
      usleep(1000 * 1000);  // alive but never arrives in time
      CHECK_THROWS_WITH(comm->Barrier(), "rank 0 gave up");
      return;
    }
    CHECK_THROWS_WITH(comm->Barrier(), "rank 0 waited 300 ms in a collective for its peers");
  });
  CHECK(AllZero(codes));
}

TG_TEST_MAIN()
