// openloop-client: the open-loop load generator of benchmarks/openloop.py, in C++.
//
// The Python client (grpc.aio) spends about 300 µs of CPU on each call, so on a 2-core machine
// it cannot offer three times what the gateway under test takes without taking the cores the
// gateway needs. This program does the same job through gRPC's generic API: the request is a
// serialized ModelInferRequest read from a file and sent as is, and the answer is only walked
// far enough to count its outputs, so no protobuf code is generated or linked.
//
// The harness draws the arrival times, writes them and the request to files, starts one
// process per share of the load with the same --start, and merges what they write:
//
//   openloop-client --port P --request FILE --due FILE --deadline SECONDS --start UNIX_SECONDS
//                   --out FILE [--channels 4] [--expected-outputs 2] [--host 127.0.0.1]
//
// --due    little-endian float64[n]: due times in seconds from --start, ascending.
// --start  time.time() at which due time 0 falls. The client connects every channel first (at
//          most 10 s, else it exits 1), then waits for it.
// --out    little-endian: uint64 n, float64[n] latency (seconds from sending to the answer;
//          NaN when not sent), float64[n] late (seconds from due to sent; when not sent, how
//          late it was when skipped), int8[n] code (the gRPC status code, 0-16; 100 NOT_SENT;
//          101 BAD_RESPONSE: OK but not --expected-outputs outputs). Entry i is due[i]'s.
//
// Each arrival is its own call with its own deadline, however many are unanswered; one that
// is already later than its deadline when its turn comes is not sent, so a client that fell
// behind catches up instead of sending requests nobody waits for. When every call has ended it
// prints one JSON line: {"cpu_seconds": ..., "sent": ..., "not_sent": ..., "completed": ...},
// cpu_seconds being the whole process's user and system time. Bad arguments or unreadable
// files exit 2 with a message naming the argument.
//
// Built by scripts/install_openloop_client.sh.

#include <sys/resource.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpc/support/time.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the file formats are little-endian");

namespace {

using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

constexpr char kMethod[] = "/inference.GRPCInferenceService/ModelInfer";
constexpr int8_t kNotSent = 100;
constexpr int8_t kBadResponse = 101;
constexpr int kOutputsField = 5;  // ModelInferResponse.outputs
constexpr auto kConnectTimeout = std::chrono::seconds(10);

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string request;
  std::string due;
  double deadline = 0;
  double start = 0;
  std::string out;
  int channels = 4;
  int expected_outputs = 2;
};

// What happened to each arrival; the sending and the draining thread write disjoint entries.
struct Record {
  std::vector<double> latency;
  std::vector<double> late;
  std::vector<int8_t> codes;
};

// One call in flight, deleted when its completion is taken off the queue. The reader lives in
// the call's arena, so it is declared after (destroyed before) the context that owns the call.
struct Call {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientAsyncResponseReader<grpc::ByteBuffer>> reader;
  grpc::ByteBuffer response;
  grpc::Status status;
  Clock::time_point sent;
  size_t index = 0;
};

[[noreturn]] void Fail(int code, const std::string& message) {
  std::fprintf(stderr, "openloop-client: %s\n", message.c_str());
  std::exit(code);
}

double ParseNumber(const std::string& name, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0 || !std::isfinite(value)) {
    Fail(2, "--" + name + ": not a number: '" + text + "'");
  }
  return value;
}

int ParseInt(const std::string& name, const std::string& text, int low, int high) {
  double value = ParseNumber(name, text);
  if (value != std::floor(value) || value < low || value > high) {
    Fail(2, "--" + name + ": expected an integer from " + std::to_string(low) + " to " +
                std::to_string(high) + ", got '" + text + "'");
  }
  return static_cast<int>(value);
}

Options ParseOptions(int argc, char** argv) {
  const std::set<std::string> known = {"host",  "port", "request",  "due", "deadline",
                                       "start", "out",  "channels", "expected-outputs"};
  std::map<std::string, std::string> given;
  for (int i = 1; i < argc; i += 2) {
    std::string flag = argv[i];
    if (flag.rfind("--", 0) != 0 || !known.count(flag.substr(2))) {
      Fail(2, "unknown argument '" + flag + "'");
    }
    if (i + 1 >= argc) Fail(2, flag + ": missing its value");
    given[flag.substr(2)] = argv[i + 1];
  }
  for (const char* name : {"port", "request", "due", "deadline", "start", "out"}) {
    if (!given.count(name)) Fail(2, std::string("--") + name + " is required");
  }
  Options options;
  if (given.count("host")) options.host = given["host"];
  options.port = ParseInt("port", given["port"], 1, 65535);
  options.request = given["request"];
  options.due = given["due"];
  options.deadline = ParseNumber("deadline", given["deadline"]);
  if (options.deadline <= 0) Fail(2, "--deadline: must be positive");
  options.start = ParseNumber("start", given["start"]);
  options.out = given["out"];
  if (given.count("channels")) options.channels = ParseInt("channels", given["channels"], 1, 256);
  if (given.count("expected-outputs")) {
    options.expected_outputs =
        ParseInt("expected-outputs", given["expected-outputs"], 0, 1 << 30);
  }
  return options;
}

std::string ReadFile(const std::string& name, const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) Fail(2, "--" + name + ": cannot open " + path + ": " + std::strerror(errno));
  std::string bytes;
  char buffer[1 << 16];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, file)) > 0) bytes.append(buffer, got);
  bool failed = std::ferror(file) != 0;
  std::fclose(file);
  if (failed) Fail(2, "--" + name + ": cannot read " + path);
  return bytes;
}

std::vector<double> ReadDue(const std::string& path) {
  std::string bytes = ReadFile("due", path);
  if (bytes.size() % sizeof(double) != 0) {
    Fail(2, "--due: " + path + " holds " + std::to_string(bytes.size()) +
                " bytes, not a whole number of float64");
  }
  std::vector<double> due(bytes.size() / sizeof(double));
  std::memcpy(due.data(), bytes.data(), bytes.size());
  for (size_t i = 0; i < due.size(); ++i) {
    if (!std::isfinite(due[i]) || (i > 0 && due[i] < due[i - 1])) {
      Fail(2, "--due: entry " + std::to_string(i) + " is not finite or not ascending");
    }
  }
  return due;
}

bool ReadVarint(const uint8_t** at, const uint8_t* end, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *at < end; shift += 7) {
    uint8_t byte = *(*at)++;
    *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// Top-level fields `field` (length-delimited) of a protobuf message; -1 if it is malformed.
long CountField(const uint8_t* at, const uint8_t* end, uint64_t field) {
  long count = 0;
  while (at < end) {
    uint64_t tag, value;
    if (!ReadVarint(&at, end, &tag) || (tag >> 3) == 0) return -1;
    switch (tag & 7) {
      case 0:
        if (!ReadVarint(&at, end, &value)) return -1;
        break;
      case 1:
        if (end - at < 8) return -1;
        at += 8;
        break;
      case 2:
        if (!ReadVarint(&at, end, &value) || value > static_cast<uint64_t>(end - at)) return -1;
        at += value;
        count += (tag >> 3) == field;
        break;
      case 5:
        if (end - at < 4) return -1;
        at += 4;
        break;
      default:  // groups (3, 4) are not in the inference protocol; 6 and 7 do not exist
        return -1;
    }
  }
  return count;
}

long CountOutputs(const grpc::ByteBuffer& response) {
  grpc::Slice slice;
  if (!response.TrySingleSlice(&slice).ok() && !response.DumpToSingleSlice(&slice).ok()) {
    return -1;
  }
  return CountField(slice.begin(), slice.end(), kOutputsField);
}

// Built once: each call copies it, and a copy shares the slice instead of the bytes.
grpc::ByteBuffer LoadRequest(const std::string& path) {
  std::string bytes = ReadFile("request", path);
  grpc::Slice slice(bytes.data(), bytes.size());
  return grpc::ByteBuffer(&slice, 1);
}

std::vector<std::unique_ptr<grpc::GenericStub>> Connect(const Options& options) {
  std::string target = options.host + ":" + std::to_string(options.port);
  auto until = std::chrono::system_clock::now() + kConnectTimeout;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (int i = 0; i < options.channels; ++i) {
    grpc::ChannelArguments arguments;
    // Channels with equal arguments share one subchannel, hence one connection; the server
    // may be several processes on one port (SO_REUSEPORT), which spreads connections only.
    arguments.SetInt("driftgate.openloop_channel", i);
    arguments.SetMaxReceiveMessageSize(-1);
    auto channel =
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
    if (!channel->WaitForConnected(until)) {
      Fail(1, "channel " + std::to_string(i) + " to " + target + " not ready within " +
                  std::to_string(kConnectTimeout.count()) + " s");
    }
    stubs.push_back(std::make_unique<grpc::GenericStub>(channel));
  }
  return stubs;
}

void Drain(grpc::CompletionQueue* queue, int expected_outputs, Record* record,
           std::atomic<size_t>* completed) {
  void* tag;
  bool ok;
  while (queue->Next(&tag, &ok)) {
    std::unique_ptr<Call> call(static_cast<Call*>(tag));
    record->latency[call->index] = Seconds(Clock::now() - call->sent).count();
    int8_t code = static_cast<int8_t>(call->status.error_code());
    if (call->status.ok() && CountOutputs(call->response) != expected_outputs) {
      code = kBadResponse;
    }
    record->codes[call->index] = code;
    completed->fetch_add(1, std::memory_order_relaxed);
  }
}

// time.time() `unix_seconds` on the steady clock, which the schedule is kept on.
Clock::time_point SteadyAt(double unix_seconds) {
  double now = Seconds(std::chrono::system_clock::now().time_since_epoch()).count();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(Seconds(unix_seconds - now));
}

// Sends every arrival on time (or skips it); returns how many were sent.
size_t Send(const Options& options, const std::vector<double>& due,
            const grpc::ByteBuffer& request, std::vector<std::unique_ptr<grpc::GenericStub>>& stubs,
            grpc::CompletionQueue* queue, Record* record) {
  const std::string method = kMethod;  // PrepareUnaryCall takes a string: one, not one a call
  const auto deadline = gpr_time_from_nanos(static_cast<int64_t>(options.deadline * 1e9),
                                            GPR_TIMESPAN);
  Clock::time_point begin = SteadyAt(options.start);
  if (begin < Clock::now()) {
    std::fprintf(stderr, "openloop-client: --start was %.3f s ago when connected\n",
                 Seconds(Clock::now() - begin).count());
  }
  size_t sent = 0;
  for (size_t i = 0; i < due.size(); ++i) {
    auto due_at = begin + std::chrono::duration_cast<Clock::duration>(Seconds(due[i]));
    // A sleeping thread, not a spinning one: the gateway under test needs the cores.
    std::this_thread::sleep_until(due_at);
    auto now = Clock::now();
    record->late[i] = Seconds(now - due_at).count();
    if (record->late[i] > options.deadline) {
      record->codes[i] = kNotSent;
      continue;
    }
    auto call = std::make_unique<Call>();
    call->index = i;
    call->sent = now;
    call->context.set_deadline(gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), deadline));
    call->reader =
        stubs[sent % stubs.size()]->PrepareUnaryCall(&call->context, method, request, queue);
    call->reader->StartCall();
    call->reader->Finish(&call->response, &call->status, call.get());
    call.release();  // Drain deletes it
    ++sent;
  }
  return sent;
}

void WriteRecord(const std::string& path, FILE* file, const Record& record) {
  uint64_t n = record.codes.size();
  bool ok = std::fwrite(&n, sizeof n, 1, file) == 1 &&
            std::fwrite(record.latency.data(), sizeof(double), n, file) == n &&
            std::fwrite(record.late.data(), sizeof(double), n, file) == n &&
            std::fwrite(record.codes.data(), 1, n, file) == n;
  if (std::fclose(file) != 0 || !ok) Fail(2, "--out: cannot write " + path);
}

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec * 1e-6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

}  // namespace

int main(int argc, char** argv) {
  Options options = ParseOptions(argc, argv);
  grpc::ByteBuffer request = LoadRequest(options.request);
  std::vector<double> due = ReadDue(options.due);
  // Opened now so that a bad path fails before the run, not after it.
  FILE* out = std::fopen(options.out.c_str(), "wb");
  if (out == nullptr) Fail(2, "--out: cannot open " + options.out + ": " + std::strerror(errno));

  Record record{std::vector<double>(due.size(), NAN), std::vector<double>(due.size(), 0.0),
                std::vector<int8_t>(due.size(), 0)};
  auto stubs = Connect(options);
  grpc::CompletionQueue queue;
  std::atomic<size_t> completed{0};
  // One thread drains: a second only takes turns with it at gRPC's poller, and its wake-ups
  // cost more than they save (about 130 µs of CPU a call instead of 115 at 2,000 calls/s).
  std::thread drainer(Drain, &queue, options.expected_outputs, &record, &completed);
  size_t sent = Send(options, due, request, stubs, &queue, &record);
  // Every call is started; the queue's Next goes on returning their completions until the
  // last one (each has a deadline, so all end), and only then reports the shutdown.
  queue.Shutdown();
  drainer.join();

  WriteRecord(options.out, out, record);
  std::printf("{\"cpu_seconds\": %.6f, \"sent\": %zu, \"not_sent\": %zu, \"completed\": %zu}\n",
              CpuSeconds(), sent, due.size() - sent, completed.load());
  return 0;
}
