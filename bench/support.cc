#include "support.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "heddle/launcher/launcher_environment.h"
#include "heddle/launcher/mountinfo.h"
#include "heddle/unique_fd.h"

namespace heddle::bench {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

volatile std::sig_atomic_t g_interrupted = 0;

void install_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = [](int) { g_interrupted = 1; };
  for (const int signo : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(signo, &action, nullptr);
  // A dead helper must become an EPIPE we unwind from, not a kill.
  ::signal(SIGPIPE, SIG_IGN);
}

// ---- statistics and the figures

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

const std::vector<double>& Figures::at(const std::string& key) const {
  static const std::vector<double> none;
  const auto it = samples_.find(key);
  return it == samples_.end() ? none : it->second;
}

void Figures::ratio(const std::string& key, const std::string& a, const std::string& b) {
  const auto &x = at(a), &y = at(b);
  if (x.empty() || y.empty()) return;
  Spread spread{INFINITY, -INFINITY};
  for (std::size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
    spread.low = std::min(spread.low, x[i] / y[i]);
    spread.high = std::max(spread.high, x[i] / y[i]);
  }
  samples_[key] = {median(x) / median(y)};
  if (x.size() > 1) ratio_spread_[key] = spread;
}

void Figures::print(const std::string& title) const {
  std::printf("\n## %s\n\n| key | median | min | max | n |\n|---|---:|---:|---:|---:|\n",
              title.c_str());
  std::string results;
  for (const auto& [key, v] : samples_) {
    const double mid = median(v);  // NaN if empty
    if (std::isnan(mid)) continue;
    const auto spread = ratio_spread_.find(key);
    const bool ratio = spread != ratio_spread_.end();
    const double low = ratio ? spread->second.low : std::ranges::min(v),
                 high = ratio ? spread->second.high : std::ranges::max(v);
    std::printf("| `%s` | %.4g | %.4g | %.4g | %zu |\n", key.c_str(), mid, low, high, v.size());
    if (key.starts_with("diag.")) continue;  // in the table, not a RESULT
    char line[256];
    const int n = std::snprintf(line, sizeof line, "RESULT %s %.3f", key.c_str(), mid);
    if ((v.size() > 1 || ratio) && n > 0 && n < 200)
      std::snprintf(line + n, sizeof line - static_cast<std::size_t>(n), " %.3f %.3f", low, high);
    results += std::string(line) + "\n";
  }
  std::printf("\n%s", results.c_str());
}

// ---- mounts

bool is_mounted(const std::string& path) { return launcher::top_mount_at(path).has_value(); }

std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& entry : launcher::read_mountinfo()) {
    if (entry.mount_point == dir || entry.mount_point.starts_with(dir + "/")) {
      out.push_back(std::move(entry.mount_point));
    }
  }
  return out;
}

void unmount_quietly(const std::string& path) {
  try {
    for (int attempt = 0; attempt < 20 && is_mounted(path); ++attempt) {
      if (::umount2(path.c_str(), 0) == 0) return;
      if (errno != EBUSY || attempt == 19) {
        std::fprintf(stderr, "bench: umount %s: %s; detaching lazily\n", path.c_str(),
                     std::strerror(errno));
        ::umount2(path.c_str(), MNT_DETACH);
        return;
      }
      std::this_thread::sleep_for(50ms);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: unmount %s: %s\n", path.c_str(), e.what());
  }
}

MountPoint::MountPoint(std::string path) : path_(std::move(path)) {
  if (::mkdir(path_.c_str(), 0755) != 0) throw_errno("mkdir " + path_);
}

MountPoint::~MountPoint() {
  unmount_quietly(path_);
  if (::rmdir(path_.c_str()) != 0)
    std::fprintf(stderr, "bench: rmdir %s: %s\n", path_.c_str(), std::strerror(errno));
}

ScratchDir::ScratchDir(const std::string& prefix) {
  std::string pattern = "/tmp/" + prefix + "XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp " + pattern);
  path_ = pattern;
  if (::chmod(path_.c_str(), 0755) != 0) throw_errno("chmod " + path_);
}

ScratchDir::~ScratchDir() {
  try {
    for (const auto& point : mounts_under(path_)) unmount_quietly(point);
    if (!mounts_under(path_).empty()) {
      std::fprintf(stderr, "bench: mounts remain under %s; leaving it\n", path_.c_str());
      return;
    }
    std::error_code ec;
    fs::remove_all(path_, ec);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: cleanup of %s: %s\n", path_.c_str(), e.what());
  }
}

// ---- our mounts: the Supervisor API

LiveMount::LiveMount(ipc::MountSpec spec) : mountpoint_(spec.mountpoint) {
  static const auto options = launcher::LauncherEnvironment::read().supervisor_options();
  const auto t0 = Clock::now();
  supervisor_ = launcher::Supervisor::spawn(std::move(spec), options);
  spawn_seconds_ = seconds_since(t0);
  if (!is_mounted(mountpoint_))
    throw Error("spawn returned but " + mountpoint_ + " is not mounted", 0);
}

LiveMount::~LiveMount() {
  try {
    unmount();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: unmount %s: %s\n", mountpoint_.c_str(), e.what());
  }
}

LiveMount LiveMount::directory(const std::string& source, const std::string& mountpoint) {
  return LiveMount(ipc::MountSpec::directory(source, mountpoint));
}

LiveMount LiveMount::thread(const std::string& repo, const std::string& mountpoint) {
  return LiveMount(ipc::MountSpec::thread(ipc::GitSource{repo, "main"}, mountpoint));
}

double LiveMount::unmount() {
  if (!supervisor_) return 0;
  const auto t0 = Clock::now();
  supervisor_->unmount();
  const double seconds = seconds_since(t0);
  supervisor_.reset();
  if (is_mounted(mountpoint_)) throw Error(mountpoint_ + " is still mounted", EBUSY);
  return seconds;
}

std::uint64_t LiveMount::status_number(const char* key) {
  const auto status = supervisor_->status();
  if (!status.extra.contains(key)) throw Error(std::string("Status has no '") + key + "'", EPROTO);
  return status.extra.at(key).get<std::uint64_t>();
}

// ---- child processes

namespace {

std::string text_of(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + a;
  return out;
}

std::string tail_of(const std::string& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > 600 ? "..." + text.substr(text.size() - 600) : text;
}

UniqueFd memfd(const std::string& content) {
  UniqueFd fd(::memfd_create("bench", MFD_CLOEXEC));
  if (!fd) throw_errno("memfd_create");
  write_all(fd.get(), content.data(), content.size(), "memfd");
  ::lseek(fd.get(), 0, SEEK_SET);
  return fd;
}

// argv[0] found on PATH; `fds` bound as {ours, the child's}, over its inherited stdio.
Process start(std::vector<std::string> argv, const std::vector<std::pair<int, int>>& fds) {
  if (argv[0].find('/') == std::string::npos) {
    const std::string found = find_on_path(argv[0]);
    if (found.empty()) throw Error(argv[0] + " is not on PATH", ENOENT);
    argv[0] = found;
  }
  ProcessOptions options;
  options.output = ProcessOptions::Output::kInherit;
  options.fds = fds;
  return Process(argv, options);
}

// Appends to `log`, or our stderr if empty.
UniqueFd open_log(const std::string& log) {
  if (log.empty()) return UniqueFd(::dup(STDERR_FILENO));
  UniqueFd fd(::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!fd) throw_errno("open " + log);
  return fd;
}

}  // namespace

void run(const std::vector<std::string>& argv, const RunOptions& o) {
  const UniqueFd in = memfd(o.input), out = memfd(""), err = open_log(o.log);
  const auto result =
      start(argv, {{in.get(), 0}, {out.get(), 1}, {err.get(), 2}}).finish(o.timeout);
  if (result.timed_out) {
    throw Error(
        "'" + text_of(argv) + "' timed out after " + std::to_string(o.timeout.count()) + " s",
        ETIMEDOUT);
  }
  if (!result.ok()) {
    throw Error("'" + text_of(argv) + "' exited with " + std::to_string(result.exit_code) +
                    (o.log.empty() ? "" : "; its stderr ends: " + tail_of(o.log)),
                0);
  }
  if (o.out != nullptr) {
    o.out->clear();
    char buffer[65536];
    for (ssize_t n; (n = ::pread(out.get(), buffer, sizeof buffer, std::ssize(*o.out))) > 0;) {
      o.out->append(buffer, static_cast<std::size_t>(n));
    }
  }
}

std::string output_of(const std::vector<std::string>& argv) {
  std::string out;
  run(argv, {.out = &out});
  return out;
}

Daemon::Daemon(const std::vector<std::string>& argv, const std::string& log, int fd)
    : process_([&] {
        const UniqueFd err = open_log(log);
        std::vector<std::pair<int, int>> fds{{err.get(), 1}, {err.get(), 2}};
        if (fd >= 0) fds.emplace_back(fd, 3);
        return start(argv, fds);
      }()) {}

ServerMount::ServerMount(const std::vector<std::string>& argv, std::string mountpoint,
                         const std::string& log)
    : daemon_(argv, log), mountpoint_(std::move(mountpoint)) {
  const auto t0 = Clock::now();
  while (!is_mounted(mountpoint_)) {
    check_interrupted();
    siginfo_t info{};  // WNOWAIT: the Process reaps it
    if (::waitid(P_PID, static_cast<id_t>(pid()), &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
        info.si_pid != 0) {
      throw Error("the daemon exited before mounting " + mountpoint_ + ": " + tail_of(log), 0);
    }
    if (seconds_since(t0) > 10)
      throw Error("no mount at " + mountpoint_ + " within 10 s", ETIMEDOUT);
    std::this_thread::sleep_for(1ms);
  }
}

void ServerMount::finish() {
  unmount_quietly(mountpoint_);
  daemon_.wait(3s);
  if (is_mounted(mountpoint_)) throw Error(mountpoint_ + " is still mounted", EBUSY);
}

bool on_path(const char* program) { return !find_on_path(program).empty(); }

std::string own_bin_dir() { return fs::read_symlink("/proc/self/exe").parent_path().string(); }

// ---- caches, files, walks

void drop_caches(const char* what) {
  ::sync();
  std::ofstream out("/proc/sys/vm/drop_caches");
  out << what << "\n" << std::flush;
  if (!out) throw Error(std::string("echo ") + what + " > /proc/sys/vm/drop_caches failed", EIO);
}

namespace {
std::uint64_t drops_so_far() {  // drop_caches writes seen in /proc/vmstat (ours: 2 each)
  std::ifstream in("/proc/vmstat");
  std::uint64_t total = 0, value = 0;
  for (std::string key; in >> key >> value;) {
    if (key == "drop_pagecache" || key == "drop_slab") total += value;
  }
  return total;
}

}  // namespace

void Disturbance::report(Figures& f) const {
  f.set("discarded_attempts", discarded);
  f.set("disturbed_half_rounds", disturbed);
}

void undisturbed(int own_drops, Disturbance& d, const std::function<void()>& half) {
  for (int attempt = 1;; ++attempt) {
    check_interrupted();
    const std::uint64_t before = drops_so_far();
    half();
    if (drops_so_far() - before == 2ull * static_cast<std::uint64_t>(own_drops)) return;
    if (attempt == 3) {
      ++d.disturbed;
      return;
    }
    ++d.discarded;
  }
}

void write_all(int fd, const char* data, std::size_t size, const std::string& what) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) {
      check_interrupted();
      continue;
    }
    if (n < 0) throw_errno("write " + what);
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

void make_random_file(const std::string& path, std::uint64_t bytes) {
  const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) throw_errno("create " + path);
  // xoshiro256**: incompressible bytes at memory speed (urandom costs seconds per GiB).
  std::array<std::uint64_t, 4> s{0x9e3779b97f4a7c15ull, 0xbf58476d1ce4e5b9ull,
                                 0x94d049bb133111ebull, 0x6865646c65ull};
  const auto rotl = [](std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  std::vector<std::uint64_t> chunk(kChunk / 8);
  for (std::uint64_t done = 0; done < bytes; done += kChunk) {
    check_interrupted();
    for (auto& word : chunk) {
      word = rotl(s[1] * 5, 7) * 9;
      const std::uint64_t t = s[1] << 17;
      s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    }
    write_all(fd.get(), reinterpret_cast<const char*>(chunk.data()),
              static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, bytes - done)), path);
  }
  if (::fsync(fd.get()) != 0) throw_errno("fsync " + path);
}

void make_tree(const std::string& root, int dirs, int files_per_dir) {
  if (::mkdir(root.c_str(), 0755) != 0) throw_errno("mkdir " + root);
  char name[64];
  for (int d = 0; d < dirs; ++d) {
    check_interrupted();
    std::snprintf(name, sizeof name, "/d%03d", d);
    const std::string dir = root + name;
    if (::mkdir(dir.c_str(), 0755) != 0) throw_errno("mkdir " + dir);
    for (int f = 0; f < files_per_dir; ++f) {
      std::snprintf(name, sizeof name, "/f%04d", f);
      // Empty: the walks read metadata only, and such files are cheap to make and remove.
      if (::mknod((dir + name).c_str(), S_IFREG | 0644, 0) != 0)
        throw_errno("create " + dir + name);
    }
  }
  ::sync();
}

double sequential_read_mibs(const std::string& path, std::uint64_t expected) {
  static std::vector<char> buffer(kChunk, 1);  // touched: no page faults inside the timing
  const auto t0 = Clock::now();
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  std::uint64_t total = 0;
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) {
      check_interrupted();
      continue;
    }
    if (n < 0) throw_errno("read " + path);
    if (n == 0) break;
    total += static_cast<std::uint64_t>(n);
  }
  const double seconds = seconds_since(t0);
  if (total != expected) throw Error("read " + std::to_string(total) + " bytes of " + path, EIO);
  return static_cast<double>(total) / kMiB / seconds;
}

ReadPasses read_passes(const std::string& path, std::uint64_t expected) {
  drop_caches("3");
  ReadPasses r;
  r.cold = sequential_read_mibs(path, expected);
  r.second = sequential_read_mibs(path, expected);
  r.warm = sequential_read_mibs(path, expected);
  return r;
}

void check_same_ends(const std::string& a, const std::string& b, std::uint64_t size) {
  const auto chunk = [&](const std::string& path, std::uint64_t offset) {
    std::ifstream in(path, std::ios::binary);
    std::string out(std::min<std::uint64_t>(kMiB, size - offset), '\0');
    in.seekg(static_cast<std::streamoff>(offset));
    if (!in.read(out.data(), static_cast<std::streamsize>(out.size())))
      throw Error("read " + path, EIO);
    return out;
  };
  for (const std::uint64_t offset : {std::uint64_t{0}, size - std::min(size, kMiB)}) {
    if (chunk(a, offset) != chunk(b, offset)) throw Error(a + " and " + b + " differ", EIO);
  }
}

namespace {
void walk_dir(const std::string& path, WalkResult& r) {
  const auto error = [&r] {
    if (r.errors++ == 0) r.first_errno = errno;
  };
  const std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(path.c_str()), &::closedir);
  if (!dir) return error();
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(dir.get());
    if (entry == nullptr) {
      if (errno != 0) error();
      return;
    }
    const std::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    const std::string child = path + "/" + entry->d_name;
    struct stat st {};
    if (::lstat(child.c_str(), &st) != 0) {
      error();
      continue;
    }
    if (S_ISREG(st.st_mode)) r.bytes += static_cast<std::uint64_t>(st.st_size);
    if ((++r.entries & 4095) == 0 && g_interrupted != 0) return;
    if (entry->d_type == DT_DIR || (entry->d_type == DT_UNKNOWN && S_ISDIR(st.st_mode)))
      walk_dir(child, r);
  }
}
}  // namespace

WalkResult walk(const std::string& root) {
  WalkResult r;
  const auto t0 = Clock::now();
  walk_dir(root, r);
  r.seconds = seconds_since(t0);
  check_interrupted();
  return r;
}

double walk_ms(const std::string& root, std::uint64_t expected) {
  const WalkResult r = walk(root);
  if (r.errors != 0 || r.entries != expected) {
    throw Error("walked " + std::to_string(r.entries) + " of " + std::to_string(expected) +
                    " entries under " + root + " with " + std::to_string(r.errors) + " errors",
                r.first_errno);
  }
  return r.seconds * 1e3;
}

// ---- /proc

namespace {
// The number after `key` in a "key: value" file of /proc/PID.
std::uint64_t proc_field(pid_t pid, const char* file, const std::string& key) {
  const std::string path = "/proc/" + std::to_string(pid) + "/" + file;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(key + ":")) return std::stoull(line.substr(key.size() + 1));
  }
  throw Error("no " + key + " in " + path, EIO);
}
}  // namespace

Memory memory_of(pid_t pid) {
  return {proc_field(pid, "status", "VmRSS"), proc_field(pid, "status", "VmHWM")};
}
std::uint64_t pss_kib_of(pid_t pid) { return proc_field(pid, "smaps_rollup", "Pss"); }

std::vector<pid_t> descendants(pid_t pid) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "children");
    for (pid_t child = 0; in >> child;) {
      out.push_back(child);
      const auto below = descendants(child);
      out.insert(out.end(), below.begin(), below.end());
    }
  }
  return out;
}

double cpu_seconds_of(pid_t pid) {
  if (pid <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(in, text);
  std::istringstream fields(text.substr(text.rfind(')') + 2));  // after "pid (comm) "
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i >= 14) ticks += std::stod(field);  // utime, stime
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace heddle::bench
