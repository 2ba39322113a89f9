// Communicator semantics on one rank and on thread ranks: all-to-all(v) delivers exactly what each peer sent,
// sizes are validated, every wait has a deadline, and a failing rank does not hang the others.
#include <gtest/gtest.h>

#include <atomic>
#include <numeric>
#include <random>

#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/thread_communicator.h"

namespace deepmoe {
namespace {

// Rank s sends (s·31 + d·7 + i) & 0xFF as byte i of its message to rank d, of length 3·s + 5·d + (s·d) % 4.
int64_t msg_len(int s, int d) { return 3 * s + 5 * d + (s * d) % 4; }
char msg_byte(int s, int d, int64_t i) { return char((s * 31 + d * 7 + i) & 0xFF); }

void exchange_and_check(Communicator& comm) {
  const int R = comm.size(), me = comm.rank();
  std::vector<int64_t> sb(R), so(R), rb(R), ro(R);
  int64_t stot = 0, rtot = 0;
  for (int p = 0; p < R; ++p) {
    sb[p] = msg_len(me, p);
    so[p] = stot;
    stot += sb[p] + 1;  // a gap byte between sections must stay untouched
    rb[p] = msg_len(p, me);
    ro[p] = rtot;
    rtot += rb[p] + 1;
  }
  std::vector<char> send(size_t(stot) + 1, 'x'), recv(size_t(rtot) + 1, '#');
  for (int p = 0; p < R; ++p)
    for (int64_t i = 0; i < sb[p]; ++i) send[size_t(so[p] + i)] = msg_byte(me, p, i);
  auto req = comm.all_to_all_v(send.data(), sb, so, recv.data(), rb, ro);
  req->wait();
  for (int p = 0; p < R; ++p) {
    for (int64_t i = 0; i < rb[p]; ++i) ASSERT_EQ(recv[size_t(ro[p] + i)], msg_byte(p, me, i)) << "from " << p;
    EXPECT_EQ(recv[size_t(ro[p] + rb[p])], '#');
  }
}

TEST(Communicator, SingleRankAllToAllAndGather) {
  SingleRankCommunicator comm;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  exchange_and_check(comm);
  std::vector<int64_t> v = {4, -2, 9};
  EXPECT_EQ(comm.all_gather(v), v);
  comm.barrier();
}

TEST(Communicator, SingleRankSizeMismatchIsAnError) {
  SingleRankCommunicator comm;
  char buf[8] = {};
  std::vector<int64_t> four = {4}, eight = {8}, zero = {0};
  EXPECT_THROW(comm.all_to_all_v(buf, four, zero, buf, eight, zero), Error);
}

class ThreadRanks : public ::testing::TestWithParam<int> {};

TEST_P(ThreadRanks, AllToAllVDeliversEveryMessage) {
  run_thread_ranks(GetParam(), [](Communicator& comm) {
    EXPECT_EQ(comm.kind(), "threads");
    for (int round = 0; round < 5; ++round) exchange_and_check(comm);
  });
}

TEST_P(ThreadRanks, SeveralRequestsInFlight) {
  run_thread_ranks(GetParam(), [](Communicator& comm) {
    const int R = comm.size(), me = comm.rank();
    std::vector<int64_t> b(R, 8), o(R);
    for (int p = 0; p < R; ++p) o[p] = 8 * p;
    std::vector<int64_t> s1(R), s2(R), r1(R), r2(R);
    for (int p = 0; p < R; ++p) {
      s1[p] = 100 * me + p;
      s2[p] = -(100 * me + p);
    }
    auto a = comm.all_to_all_v(s1.data(), b, o, r1.data(), b, o);
    auto c = comm.all_to_all_v(s2.data(), b, o, r2.data(), b, o);
    c->wait();  // completion order need not match start order
    a->wait();
    for (int p = 0; p < R; ++p) {
      EXPECT_EQ(r1[p], 100 * p + me);
      EXPECT_EQ(r2[p], -(100 * p + me));
    }
  });
}

TEST_P(ThreadRanks, AllGatherAndBarrier) {
  run_thread_ranks(GetParam(), [](Communicator& comm) {
    std::vector<int64_t> mine = {comm.rank(), comm.rank() * comm.rank(), 7};
    auto all = comm.all_gather(mine);
    ASSERT_EQ(all.size(), size_t(3 * comm.size()));
    for (int p = 0; p < comm.size(); ++p) {
      EXPECT_EQ(all[3 * p], p);
      EXPECT_EQ(all[3 * p + 1], p * p);
      EXPECT_EQ(all[3 * p + 2], 7);
    }
    comm.barrier();
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, ThreadRanks, ::testing::Values(1, 2, 3, 4));

TEST(ThreadCommunicator, SizeMismatchNamesThePeer) {
  try {
    run_thread_ranks(2, [](Communicator& comm) {
      std::vector<int64_t> sb = {8, comm.rank() == 1 ? 4 : 8}, so = {0, 8}, rb = {8, 8}, ro = {0, 8};
      std::vector<char> send(16), recv(16);
      comm.all_to_all_v(send.data(), sb, so, recv.data(), rb, ro)->wait();
    });
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 sends 4 bytes but 8 are expected"), std::string::npos) << e.what();
  }
}

TEST(ThreadCommunicator, SilentPeerTimesOutNamingIt) {
  ThreadHub hub(3);
  Communicator& c0 = hub.communicator(0);
  c0.set_timeout(std::chrono::milliseconds(200));
  std::atomic<bool> rank1_done{false};
  std::thread t1([&] {
    try {
      hub.communicator(1).set_timeout(std::chrono::milliseconds(200));
      hub.communicator(1).barrier();
    } catch (const Error&) {
    }
    rank1_done = true;
  });
  // Rank 2 never enters the barrier.
  try {
    c0.barrier();
    FAIL() << "expected a timeout";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("barrier"), std::string::npos) << m;
    EXPECT_NE(m.find("timed out"), std::string::npos) << m;
    EXPECT_NE(m.find("rank(s) 2"), std::string::npos) << m;
  }
  t1.join();
  EXPECT_TRUE(rank1_done);
}

TEST(ThreadCommunicator, FailingRankAbortsTheOthers) {
  auto start = std::chrono::steady_clock::now();
  try {
    run_thread_ranks(4, [](Communicator& comm) {
      if (comm.rank() == 2) throw Error("expert weights missing on this rank");
      comm.barrier();  // would wait the full 30 s deadline without the abort
      comm.barrier();
    });
    FAIL() << "expected the rank's error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expert weights missing"), std::string::npos) << e.what();
  }
  // Not a timing assertion on speed: a hang here would mean the abort did not reach the waiting ranks.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

TEST(ThreadCommunicator, MismatchedCollectivesAreAnError) {
  EXPECT_THROW(run_thread_ranks(2,
                                [](Communicator& comm) {
                                  if (comm.rank() == 0) {
                                    comm.barrier();
                                  } else {
                                    std::vector<int64_t> v = {1};
                                    comm.all_gather(v);
                                  }
                                }),
               Error);
}

TEST(Communicator, TimeoutFromEnvironment) {
  setenv("DEEPMOE_COMM_TIMEOUT_S", "2.5", 1);
  EXPECT_EQ(comm_timeout_from_env(), std::chrono::milliseconds(2500));
  setenv("DEEPMOE_COMM_TIMEOUT_S", "soon", 1);
  EXPECT_THROW(comm_timeout_from_env(), Error);
  unsetenv("DEEPMOE_COMM_TIMEOUT_S");
  EXPECT_EQ(comm_timeout_from_env(), kDefaultCommTimeout);
}

}  // namespace
}  // namespace deepmoe
