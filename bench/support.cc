#include "support.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "heddle/launcher/launcher_environment.h"
#include "heddle/launcher/mountinfo.h"

namespace heddle::bench {

volatile std::sig_atomic_t g_interrupted = 0;

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

void Figures::ratio(const std::string& key, const std::string& a, const std::string& b) {
  if (!samples_.contains(a) || !samples_.contains(b)) return;
  const std::vector<double> x = samples_[a], y = samples_[b];
  std::pair<double, double> spread{INFINITY, -INFINITY};
  for (std::size_t i = 0; i < std::min(x.size(), y.size()); ++i)
    spread = {std::min(spread.first, x[i] / y[i]), std::max(spread.second, x[i] / y[i])};
  samples_[key] = {median(x) / median(y)};
  if (x.size() > 1) ratio_spread_[key] = spread;
}

void Figures::print() const {
  for (const auto& [key, v] : samples_) {
    if (std::isnan(median(v))) continue;  // nothing measured
    const auto ratio = ratio_spread_.find(key);
    const auto [low, high] = ratio != ratio_spread_.end()
                                 ? ratio->second
                                 : std::pair{std::ranges::min(v), std::ranges::max(v)};
    std::printf("%s %s %.3f", key.starts_with("diag.") ? "DIAG" : "RESULT", key.c_str(), median(v));
    if (v.size() > 1 || ratio != ratio_spread_.end()) std::printf(" %.3f %.3f", low, high);
    std::printf("\n");
  }
}

void side_by_side(int rounds, int systems, const std::function<void(int, int)>& body) {
  for (int round = 0; round < rounds; ++round) {
    for (int i = 0; i < systems; ++i) {
      check_interrupted();
      body((round + i) % systems, round);
    }
  }
}

bool is_mounted(const std::string& path) { return launcher::top_mount_at(path).has_value(); }

std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& entry : launcher::read_mountinfo()) {
    if (entry.mount_point == dir || entry.mount_point.starts_with(dir + "/"))
      out.push_back(std::move(entry.mount_point));
  }
  return out;
}

void unmount_quietly(const std::string& path) {
  try {
    for (int attempt = 1; is_mounted(path) && ::umount2(path.c_str(), 0) != 0; ++attempt) {
      if (errno != EBUSY || attempt == 20) {
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

MountPoint::~MountPoint() {
  unmount_quietly(path_);
  if (::rmdir(path_.c_str()) != 0)
    std::fprintf(stderr, "bench: rmdir %s: %s\n", path_.c_str(), std::strerror(errno));
}

ScratchDir::ScratchDir(const std::string& prefix) : path_("/tmp/" + prefix + "XXXXXX") {
  if (::mkdtemp(path_.data()) == nullptr) throw_errno("mkdtemp " + path_);
  if (::chmod(path_.c_str(), 0755) != 0) throw_errno("chmod " + path_);
}

ScratchDir::~ScratchDir() {
  try {
    for (const auto& point : mounts_under(path_)) unmount_quietly(point);
    std::error_code ec;
    if (mounts_under(path_).empty()) fs::remove_all(path_, ec);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: cleanup of %s: %s\n", path_.c_str(), e.what());
  }
}

LiveMount::LiveMount(ipc::Source source, const std::string& mountpoint)
    : mountpoint_(std::make_unique<MountPoint>(mountpoint)) {
  static const auto options = launcher::LauncherEnvironment::read().supervisor_options();
  ipc::MountSpec spec = ipc::MountSpec::directory({}, mountpoint);
  spec.source = std::move(source);
  const auto t0 = Clock::now();
  supervisor_ = launcher::Supervisor::spawn(std::move(spec), options);
  spawn_seconds_ = seconds_since(t0);
  if (!is_mounted(mountpoint)) throw Error("spawn returned but " + mountpoint + " is unmounted", 0);
}

double LiveMount::unmount() {
  if (!supervisor_) return 0;
  const auto t0 = Clock::now();
  supervisor_->unmount();
  const double seconds = seconds_since(t0);
  supervisor_.reset();
  if (is_mounted(mountpoint_->path()))
    throw Error(mountpoint_->path() + " is still mounted", EBUSY);
  return seconds;
}

namespace {

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

// argv[0] found on PATH, with `fds` bound as {ours, the child's}, `fd3` as 3; stderr (and
// stdout unless bound) appended to `log`, else ours.
Process start(std::vector<std::string> argv, std::vector<std::pair<int, int>> fds,
              const std::string& log, const std::vector<std::string>& env = {}, int fd3 = -1) {
  const std::string program =
      argv[0].find('/') == std::string::npos ? find_on_path(argv[0]) : argv[0];
  if (program.empty()) throw Error(argv[0] + " is not on PATH", ENOENT);
  argv[0] = program;
  const UniqueFd err(log.empty()
                         ? ::dup(STDERR_FILENO)
                         : ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!err) throw_errno("open " + log);
  fds.emplace_back(err.get(), 2);
  if (fd3 >= 0) fds.emplace_back(fd3, 3);
  if (std::ranges::none_of(fds, [](auto fd) { return fd.second == 1; }))
    fds.emplace_back(err.get(), 1);
  return Process(argv, {.output = ProcessOptions::Output::kInherit, .env = env, .fds = fds});
}

}  // namespace

std::string run(const std::vector<std::string>& argv, const RunOptions& o) {
  const UniqueFd in = memfd(o.input), out = memfd("");
  const auto result =
      start(argv, {{in.get(), 0}, {out.get(), 1}}, o.log, o.env).finish(std::chrono::minutes(10));
  std::string text;
  for (const auto& a : argv) text += (text.empty() ? "" : " ") + a;
  if (result.timed_out) throw Error("'" + text + "' timed out after 10 minutes", ETIMEDOUT);
  if (!result.ok()) {
    throw Error("'" + text + "' exited with " + std::to_string(result.exit_code) +
                    (o.log.empty() ? "" : "; its stderr ends: " + tail_of(o.log)),
                0);
  }
  std::string text_out;
  char buffer[65536];
  for (ssize_t n; (n = ::pread(out.get(), buffer, sizeof buffer, std::ssize(text_out))) > 0;)
    text_out.append(buffer, static_cast<std::size_t>(n));
  return text_out;
}

const std::vector<std::string> kGitEnv = {
    "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=heddle",
    "GIT_AUTHOR_EMAIL=heddle@example.invalid", "GIT_COMMITTER_NAME=heddle",
    "GIT_COMMITTER_EMAIL=heddle@example.invalid", "GIT_AUTHOR_DATE=2024-05-06T07:08:09Z",
    "GIT_COMMITTER_DATE=2024-05-06T07:08:09Z"};

void git(std::vector<std::string> args, const std::string& input) {
  args.insert(args.begin(), {"git", "-c", "gc.auto=0"});
  run(args, {.input = input, .env = kGitEnv});
}

Daemon::Daemon(const std::vector<std::string>& argv, std::string log, int fd)
    : process_(start(argv, {}, log, {}, fd)), log_(std::move(log)) {}

void Daemon::mounted(const std::string& mountpoint) {
  for (const auto t0 = Clock::now(); !is_mounted(mountpoint); std::this_thread::sleep_for(1ms)) {
    check_interrupted();
    siginfo_t info{};  // WNOWAIT: the Process reaps it
    if (::waitid(P_PID, static_cast<id_t>(pid()), &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
        info.si_pid != 0) {
      throw Error("the daemon exited before mounting " + mountpoint + ": " + tail_of(log_), 0);
    }
    if (seconds_since(t0) > 10)
      throw Error("no mount at " + mountpoint + " within 10 s", ETIMEDOUT);
  }
}

std::string own_bin_dir() { return fs::read_symlink("/proc/self/exe").parent_path().string(); }

void drop_caches(const char* what) {
  ::sync();
  std::ofstream out("/proc/sys/vm/drop_caches");
  if (!(out << what << "\n" << std::flush))
    throw Error(std::string("echo ") + what + " > /proc/sys/vm/drop_caches failed", EIO);
}

void Disturbance::measure(int own_drops, const std::function<void()>& half) {
  const auto drops = [] {  // drop_caches writes seen in /proc/vmstat (ours: 2 each)
    std::ifstream in("/proc/vmstat");
    std::uint64_t total = 0, value = 0;
    for (std::string key; in >> key >> value;)
      total += key == "drop_pagecache" || key == "drop_slab" ? value : 0;
    return total;
  };
  for (int attempt = 1;; ++attempt) {
    check_interrupted();
    const std::uint64_t before = drops();
    half();
    if (drops() - before == 2ull * static_cast<std::uint64_t>(own_drops)) return;
    if (attempt == 3) return (void)++disturbed;
    ++discarded;
  }
}

void write_all(int fd, const char* data, std::size_t size, const std::string& what) {
  for (ssize_t n; size > 0; data += n, size -= static_cast<std::size_t>(n)) {
    while ((n = ::write(fd, data, size)) < 0 && errno == EINTR) check_interrupted();
    if (n < 0) throw_errno("write " + what);
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
  char name[64];
  for (int d = 0; d < dirs; ++d) {
    check_interrupted();
    std::snprintf(name, sizeof name, "/d%03d", d);
    fs::create_directories(root + name);
    for (int f = 0; f < files_per_dir; ++f) {
      std::snprintf(name, sizeof name, "/d%03d/f%04d", d, f);
      // Empty: the walks read metadata only, and such files are cheap to make and remove.
      if (::mknod((root + name).c_str(), S_IFREG | 0644, 0) != 0)
        throw_errno("create " + root + name);
    }
  }
  ::sync();
}

double sequential_read_mibs(const std::string& path, std::uint64_t expected) {
  static thread_local std::vector<char> buffer(kChunk, 1);  // no page faults inside the timing
  const auto t0 = Clock::now();
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  std::uint64_t total = 0;
  for (ssize_t n; (n = ::read(fd.get(), buffer.data(), buffer.size())) != 0;) {
    if (n < 0 && errno != EINTR) throw_errno("read " + path);
    n < 0 ? check_interrupted() : void(total += static_cast<std::uint64_t>(n));
  }
  const double seconds = seconds_since(t0);
  if (total != expected) throw Error("read " + std::to_string(total) + " bytes of " + path, EIO);
  return static_cast<double>(total) / kMiB / seconds;
}

void check_same_ends(const std::string& a, const std::string& b, std::uint64_t size) {
  for (const std::uint64_t offset : {std::uint64_t{0}, size - std::min(size, kMiB)})
    run({"cmp", "-s", "-i", std::to_string(offset), "-n", std::to_string(kMiB), a, b});
}

ReadPasses read_passes(const std::string& path, std::uint64_t size, const std::string& same_as) {
  drop_caches("3");
  ReadPasses r;
  r.cold = sequential_read_mibs(path, size);
  r.second = sequential_read_mibs(path, size);
  r.warm = sequential_read_mibs(path, size);
  if (!same_as.empty()) check_same_ends(path, same_as, size);
  return r;
}

namespace {
void walk_dir(const std::string& path, WalkResult& r) {
  const auto error = [&r] { r.first_errno = r.errors++ == 0 ? errno : r.first_errno; };
  const std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(path.c_str()), &::closedir);
  if (!dir) return error();
  for (errno = 0; const dirent* entry = ::readdir(dir.get()); errno = 0) {
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
  if (errno != 0) error();
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

std::pair<double, double> walk_passes(const std::string& root, std::uint64_t expected, int warm) {
  drop_caches("3");
  const double cold = walk_ms(root, expected);
  std::vector<double> warm_ms;
  while (std::ssize(warm_ms) < warm) warm_ms.push_back(walk_ms(root, expected));
  return {cold, median(warm_ms)};
}

double kib_of(pid_t pid, const std::string& key) {
  const std::string path =
      "/proc/" + std::to_string(pid) + (key == "Pss" ? "/smaps_rollup" : "/status");
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(key + ":")) return std::stod(line.substr(key.size() + 1));
  }
  throw Error("no " + key + " in " + path, EIO);
}

double cpu_seconds_of(pid_t pid) {
  if (pid <= 0) return 0;
  std::string text;
  std::getline(std::ifstream("/proc/" + std::to_string(pid) + "/stat"), text);
  std::istringstream after_comm(text.substr(text.rfind(')') + 2));  // fields 3...
  const std::vector<std::string> fields{std::istream_iterator<std::string>(after_comm), {}};
  return (std::stod(fields.at(11)) + std::stod(fields.at(12))) / ::sysconf(_SC_CLK_TCK);
}

}  // namespace heddle::bench
