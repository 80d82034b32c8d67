// HIXL's quickstart and d2rd samples (hicann/hixl examples/cpp/
// hixl_example_quickstart.cpp, examples/python/hixl/hixl_d2rd_multiproc_sample.py)
// as a two-process test written against hixl/hixl.h only, with device memory
// swapped for host memory and a pipe in place of the samples' socket for the
// address exchange. The server fills and registers a buffer and hands its
// address over; the client registers its own, connects, and then, checking
// every byte: READs it in many strided descriptors (TransferSync), WRITEs a
// pattern back asynchronously (TransferAsync, GetTransferStatus polled, and a
// batch of requests with user_data through the batch GetTransferStatus),
// sends a notification after the write, which the server takes as "the data
// has landed" and checks the bytes then; descriptors outside the server's
// registered memory are refused. Runs once over the same-host path and once
// over TCP (llmdd.SameHost=0).
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "hixl/hixl.h"

using namespace hixl;

namespace {
int g_failures = 0;
#define CHECK(c)                                                                              \
  do {                                                                                        \
    if (!(c)) {                                                                               \
      g_failures++;                                                                           \
      std::fprintf(stderr, "[pid %d] %s:%d: CHECK failed: %s (%s)\n", (int)getpid(), __FILE__, \
                   __LINE__, #c, llmdd_last_error_message());                                 \
    }                                                                                         \
  } while (0)

constexpr size_t kBufSize = 4u << 20;
constexpr size_t kBlock = 4096;
constexpr int32_t kTimeoutMs = 10000;

// A loopback port held until llmdd binds it: a socket bound to it with
// SO_REUSEADDR, never listening, stays open for the life of the process, so no
// other bind(0) or connect() on the machine takes it in between (llmdd's
// listener sets SO_REUSEADDR and can still bind it).
uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t n = sizeof a;
  bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a);
  getsockname(fd, reinterpret_cast<sockaddr *>(&a), &n);
  return ntohs(a.sin_port);  // fd stays open: it holds the port
}

uint8_t Pattern(size_t i, uint8_t seed) { return static_cast<uint8_t>(i * 131u + seed + (i >> 12)); }

bool Send(int fd, uint64_t v) { return write(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v); }
bool Recv(int fd, uint64_t &v, int timeout_ms = 30000) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1 && read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v);
}

std::map<AscendString, AscendString> Options(bool tcp) {
  std::map<AscendString, AscendString> opts;
  opts[OPTION_GLOBAL_RESOURCE_CONFIG] = R"({"comm_resource_config.protocol_desc": ["hccs:device"]})";
  if (tcp) opts["llmdd.SameHost"] = "0";
  return opts;
}

int RunServer(const std::string &name, bool tcp, int to_client, int from_client) {
  Hixl engine;
  if (engine.Initialize(name.c_str(), Options(tcp)) != SUCCESS) {
    std::fprintf(stderr, "server Initialize: %s\n", llmdd_last_error_message());
    return 1;
  }
  std::vector<uint8_t> buf(kBufSize);
  for (size_t i = 0; i < kBufSize; i++) buf[i] = Pattern(i, 1);
  std::vector<uint8_t> inbox(kBufSize, 0);
  MemDesc desc{};
  desc.addr = reinterpret_cast<uintptr_t>(buf.data());
  desc.len = kBufSize;
  MemDesc in_desc{};
  in_desc.addr = reinterpret_cast<uintptr_t>(inbox.data());
  in_desc.len = kBufSize;
  MemHandle h = nullptr, in_h = nullptr;
  CHECK(engine.RegisterMem(desc, MEM_DEVICE, h) == SUCCESS);
  CHECK(engine.RegisterMem(in_desc, MEM_HOST, in_h) == SUCCESS);
  CHECK(Send(to_client, desc.addr) && Send(to_client, in_desc.addr));
  // The client's notification means its WRITE has landed: check the bytes now.
  std::vector<NotifyDesc> notes;
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (notes.empty() && std::chrono::steady_clock::now() < end) {
    CHECK(engine.GetNotifies(notes) == SUCCESS);
    if (notes.empty()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  CHECK(notes.size() == 1);
  if (!notes.empty()) {
    CHECK(std::string(notes[0].name.GetString()) == "kv_done");
    CHECK(std::string(notes[0].notify_msg.GetString()) == "req-42");
  }
  size_t bad = 0;
  for (size_t i = 0; i < kBufSize; i++) bad += inbox[i] != Pattern(i, 9);
  CHECK(bad == 0);
  CHECK(Send(to_client, bad == 0 ? 1 : 0));
  uint64_t done = 0;
  CHECK(Recv(from_client, done) && done == 1);
  CHECK(engine.DeregisterMem(h) == SUCCESS);
  CHECK(engine.DeregisterMem(in_h) == SUCCESS);
  engine.Finalize();
  return g_failures == 0 ? 0 : 1;
}

std::vector<TransferOpDesc> Strided(uintptr_t local, uintptr_t remote, size_t n, size_t block) {
  // Local blocks are packed; remote ones alternate halves (block i of the
  // first half, then of the second), as a TP-mismatch head slice would be.
  std::vector<TransferOpDesc> v;
  for (size_t i = 0; i < n; i++) {
    size_t r = (i % 2 == 0) ? (i / 2) : (n / 2 + i / 2);
    v.push_back(TransferOpDesc{local + i * block, remote + r * block, block});
  }
  return v;
}

size_t RemoteIndex(size_t i, size_t n) { return (i % 2 == 0) ? (i / 2) : (n / 2 + i / 2); }

int RunClient(const std::string &name, const std::string &server, bool tcp, int from_server, int to_server) {
  Hixl engine;
  CHECK(engine.Connect(server.c_str(), kTimeoutMs) == FAILED);  // not initialized
  if (engine.Initialize(name.c_str(), Options(tcp)) != SUCCESS) {
    std::fprintf(stderr, "client Initialize: %s\n", llmdd_last_error_message());
    return 1;
  }
  std::vector<uint8_t> buf(kBufSize, 0);
  MemDesc desc{};
  desc.addr = reinterpret_cast<uintptr_t>(buf.data());
  desc.len = kBufSize;
  MemHandle h = nullptr;
  CHECK(engine.RegisterMem(desc, MEM_DEVICE, h) == SUCCESS);
  uint64_t remote = 0, remote_in = 0;
  if (!Recv(from_server, remote) || !Recv(from_server, remote_in)) return 1;

  AsyncConnectStatus st = AsyncConnectStatus::CONNECTED;
  CHECK(engine.GetAsyncConnectStatus(server.c_str(), st) == SUCCESS && st == AsyncConnectStatus::NOT_CONNECT);
  const size_t n = kBufSize / kBlock;
  auto descs = Strided(desc.addr, remote, n, kBlock);
  CHECK(engine.TransferSync(server.c_str(), READ, descs, kTimeoutMs) == NOT_CONNECTED);
  CHECK(engine.ConnectAsync(server.c_str(), kTimeoutMs) == SUCCESS);
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  do {
    CHECK(engine.GetAsyncConnectStatus(server.c_str(), st) == SUCCESS);
  } while (st != AsyncConnectStatus::CONNECTED && st != AsyncConnectStatus::CONNECT_FAILED &&
           std::chrono::steady_clock::now() < end);
  CHECK(st == AsyncConnectStatus::CONNECTED);
  CHECK(engine.Connect(server.c_str(), kTimeoutMs) == ALREADY_CONNECTED);
  std::map<AscendString, AsyncConnectStatus> all;
  CHECK(engine.GetAsyncConnectStatus(all) == SUCCESS && all.size() == 1 &&
        all[AscendString(server.c_str())] == AsyncConnectStatus::CONNECTED);

  // READ: 1024 strided 4 KiB descriptors.
  CHECK(engine.TransferSync(server.c_str(), READ, descs, kTimeoutMs) == SUCCESS);
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < kBlock; k++) bad += buf[i * kBlock + k] != Pattern(RemoteIndex(i, n) * kBlock + k, 1);
  CHECK(bad == 0);

  // Outside the server's registered memory: refused, nothing moves.
  std::vector<TransferOpDesc> outside = {TransferOpDesc{desc.addr, remote + kBufSize - 8, 16}};
  CHECK(engine.TransferSync(server.c_str(), READ, outside, kTimeoutMs) == PARAM_INVALID);
  std::vector<TransferOpDesc> unregistered_local = {TransferOpDesc{desc.addr + kBufSize, remote, 16}};
  CHECK(engine.TransferSync(server.c_str(), WRITE, unregistered_local, kTimeoutMs) == PARAM_INVALID);
  std::vector<TransferOpDesc> null_addr = {TransferOpDesc{0, remote, 16}};
  CHECK(engine.TransferSync(server.c_str(), READ, null_addr, kTimeoutMs) == PARAM_INVALID);
  CHECK(engine.TransferSync(server.c_str(), READ, descs, 0) == PARAM_INVALID);

  // WRITE asynchronously into the server's inbox: 4 requests, polled two ways.
  for (size_t i = 0; i < kBufSize; i++) buf[i] = Pattern(i, 9);
  const size_t quarter = n / 4;
  std::vector<TransferReq> reqs;
  for (size_t q = 0; q < 4; q++) {
    std::vector<TransferOpDesc> part;
    for (size_t i = q * quarter; i < (q + 1) * quarter; i++)
      part.push_back(TransferOpDesc{desc.addr + i * kBlock, remote_in + i * kBlock, kBlock});
    TransferArgs args;
    args.user_data = reinterpret_cast<const void *>(static_cast<uintptr_t>(100 + q));
    TransferReq req = nullptr;
    CHECK(engine.TransferAsync(server.c_str(), WRITE, part, args, req) == SUCCESS && req != nullptr);
    reqs.push_back(req);
  }
  // The first one by its handle, until it is final.
  TransferStatus ts = TransferStatus::WAITING;
  end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (ts == TransferStatus::WAITING && std::chrono::steady_clock::now() < end) {
    CHECK(engine.GetTransferStatus(reqs[0], ts) == SUCCESS);
  }
  CHECK(ts == TransferStatus::COMPLETED);
  // Reported final once: the handle is released.
  CHECK(engine.GetTransferStatus(reqs[0], ts) == PARAM_INVALID);
  // The other three through the batch query, with their user_data.
  std::vector<uintptr_t> seen;
  end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (seen.size() < 3 && std::chrono::steady_clock::now() < end) {
    std::vector<TransferResult> results;
    GetTransferStatusArgs args;
    args.skip_waiting = true;
    CHECK(engine.GetTransferStatus(args, results) == SUCCESS);
    for (const auto &r : results) {
      CHECK(r.status == TransferStatus::COMPLETED);
      seen.push_back(reinterpret_cast<uintptr_t>(r.user_data));
    }
  }
  std::sort(seen.begin(), seen.end());  // completion order may differ from posting order
  CHECK(seen.size() == 3 && seen[0] == 101 && seen[1] == 102 && seen[2] == 103);

  // The notification goes after the data: the server checks the bytes then.
  NotifyDesc note;
  note.name = "kv_done";
  note.notify_msg = "req-42";
  CHECK(engine.SendNotify(server.c_str(), note, kTimeoutMs) == SUCCESS);
  NotifyDesc too_long;
  too_long.name = "x";
  too_long.notify_msg = AscendString(std::string(1025, 'm').c_str());
  CHECK(engine.SendNotify(server.c_str(), too_long, kTimeoutMs) == PARAM_INVALID);
  uint64_t verified = 0;
  CHECK(Recv(from_server, verified) && verified == 1);

  int32_t value = -1;
  CHECK(Hixl::GetCapability(AUTO_CONNECT, value) == SUCCESS && value == FEATURE_SUPPORTED);
  CHECK(Hixl::GetCapability(CLIENT_SERVER_COMM, value) == SUCCESS && value == FEATURE_NOT_SUPPORTED);
  CHECK(Hixl::GetCapability(static_cast<FeatureType>(-1), value) == PARAM_INVALID);

  CHECK(engine.Disconnect(server.c_str(), kTimeoutMs) == SUCCESS);
  CHECK(engine.GetAsyncConnectStatus(server.c_str(), st) == SUCCESS && st == AsyncConnectStatus::NOT_CONNECT);
  CHECK(engine.Disconnect(server.c_str(), kTimeoutMs) == NOT_CONNECTED);
  CHECK(engine.DeregisterMem(h) == SUCCESS);
  CHECK(engine.DeregisterMem(h) == PARAM_INVALID);
  CHECK(Send(to_server, 1));
  engine.Finalize();
  return g_failures == 0 ? 0 : 1;
}

int RunPair(bool tcp) {
  const std::string server = "127.0.0.1:" + std::to_string(FreePort());
  const std::string client = "127.0.0.1:" + std::to_string(FreePort());
  int s2c[2], c2s[2];
  if (pipe(s2c) != 0 || pipe(c2s) != 0) return 2;
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) _exit(RunServer(server, tcp, s2c[1], c2s[0]));
  int rc = RunClient(client, server, tcp, s2c[0], c2s[1]);
  int st = 0;
  for (int i = 0; i < 60000 && waitpid(pid, &st, WNOHANG) == 0; i++) usleep(1000);
  if (waitpid(pid, &st, WNOHANG) == 0 && kill(pid, 0) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return 1;
  }
  int server_rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
  std::printf("%s: client %d, server %d\n", tcp ? "tcp" : "same host", rc, server_rc);
  return rc != 0 || server_rc != 0;
}
}  // namespace

int main() {
  int rc = RunPair(false);
  rc |= RunPair(true);
  std::printf("test_hixl_sample: %s\n", rc == 0 ? "ok" : "FAILED");
  return rc;
}
