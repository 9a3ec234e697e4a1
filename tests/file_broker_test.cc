// Issue 18: the supervisor's file broker, faced with a hostile worker. The worker's end of the
// broker socket is all a compromised worker has; here the test holds it and sends what such a
// worker would: paths with "..", absolute paths, symlinks, /proc/self/..., overlong paths,
// malformed packets, fds of its own, and floods. Every answer must be a refusal that opens
// nothing outside the source, and the supervisor's side must stay bounded and stoppable.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "heddle/ipc/fd_passing.h"
#include "heddle/ipc/file_broker.h"
#include "heddle/launcher/file_broker.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using namespace std::chrono_literals;
using ipc::BrokerOpen;

struct Answer {
  int error = -1;
  UniqueFd fd;
  std::optional<std::pair<std::uint32_t, std::uint32_t>> owner;
};

class FileBrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tree_.write("open.txt", "open\n", 0644);
    tree_.write("private.txt", "private\n", 0600);
    tree_.write("dir/inner.txt", "inner\n", 0600);
    fs::create_directory_symlink("/etc", tree_.source() / "etc-link");
    fs::create_symlink("/etc/passwd", tree_.source() / "passwd-link");
    fs::create_symlink("open.txt", tree_.source() / "inside-link");
    outside_ = tree_.root() / "outside.txt";
    std::ofstream(outside_) << "outside\n";
  }

  // A broker serving tree_.source() as root 0, acting as `uid`/`gid`.
  void start(uid_t uid = ::geteuid(), gid_t gid = ::getegid()) {
    std::vector<UniqueFd> roots;
    roots.emplace_back(::open(tree_.source().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(roots.back());
    auto sockets = launcher::make_broker_sockets();
    worker_ = std::move(sockets.worker);
    broker_ = std::make_unique<launcher::FileBroker>(std::move(roots),
                                                     std::move(sockets.supervisor), uid, gid);
  }

  void send_packet(std::string_view packet) const {
    ASSERT_EQ(::send(worker_.get(), packet.data(), packet.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(packet.size()));
  }

  Answer receive() const {
    auto got = ipc::receive_fds_between(worker_.get(), 0, 1, 64, 5000ms);
    Answer answer;
    const auto decoded = ipc::decode_broker_answer(got.payload);
    EXPECT_TRUE(decoded) << got.payload.size() << " bytes";
    if (!decoded) return answer;
    answer.error = decoded->error;
    if (decoded->has_owner) answer.owner.emplace(decoded->uid, decoded->gid);
    if (!got.fds.empty()) answer.fd = std::move(got.fds[0]);
    EXPECT_EQ(answer.error == 0 && !answer.owner, static_cast<bool>(answer.fd))
        << "an fd comes with success only, and never with an owner";
    return answer;
  }

  Answer ask(BrokerOpen kind, const std::string& path, std::uint8_t root = 0) const {
    send_packet(ipc::encode_broker_request({kind, root, path}));
    return receive();
  }

  ScratchTree tree_;
  fs::path outside_;
  UniqueFd worker_;
  std::unique_ptr<launcher::FileBroker> broker_;
};

std::string read_all(int fd) {
  std::string out;
  char buffer[256];
  for (ssize_t n; (n = ::pread(fd, buffer, sizeof buffer, static_cast<off_t>(out.size()))) > 0;) {
    out.append(buffer, static_cast<std::size_t>(n));
  }
  return out;
}

TEST_F(FileBrokerTest, GrantsReadOnlyFdsBeneathTheSource) {
  start();
  Answer file = ask(BrokerOpen::kFile, "dir/inner.txt");
  ASSERT_EQ(file.error, 0);
  EXPECT_EQ(read_all(file.fd.get()), "inner\n");
  const int flags = ::fcntl(file.fd.get(), F_GETFL);
  EXPECT_EQ(flags & O_ACCMODE, O_RDONLY);
  EXPECT_EQ(::write(file.fd.get(), "x", 1), -1) << "a brokered fd is never writable";
  EXPECT_NE(::fcntl(file.fd.get(), F_GETFD) & FD_CLOEXEC, 0);

  Answer dir = ask(BrokerOpen::kDirectory, "dir");
  ASSERT_EQ(dir.error, 0);
  struct stat st {};
  ASSERT_EQ(::fstat(dir.fd.get(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(ask(BrokerOpen::kDirectory, ".").error, 0) << "the root itself";

  // A lookup's O_PATH fd of a symlink is the link itself, never its target.
  Answer link = ask(BrokerOpen::kPath, "passwd-link");
  ASSERT_EQ(link.error, 0);
  ASSERT_EQ(::fstat(link.fd.get(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(broker_->stats().granted, 4u);
}

TEST_F(FileBrokerTest, RefusesEveryPathThatIsNotStrictlyBeneathTheSource) {
  start();
  for (const std::string& path : std::vector<std::string>{"..", "../outside.txt", "dir/../../outside.txt", "dir/..", "/etc/passwd",
        outside_.string(), "", "dir//inner.txt", "./open.txt", "dir/./inner.txt", "dir/",
        "/", "//etc/passwd"}) {
    for (const BrokerOpen kind : {BrokerOpen::kPath, BrokerOpen::kFile, BrokerOpen::kDirectory}) {
      const Answer answer = ask(kind, path);
      EXPECT_EQ(answer.error, EINVAL) << "\"" << path << "\" kind " << static_cast<int>(kind);
    }
  }
  // NUL cuts a path short in C: refused as such, not read as "open.txt".
  EXPECT_EQ(ask(BrokerOpen::kFile, std::string("open.txt\0/../x", 14)).error, EINVAL);
  EXPECT_EQ(broker_->stats().granted, 0u);
}

TEST_F(FileBrokerTest, FollowsNoSymlinkAnywhereInThePath) {
  start();
  EXPECT_EQ(ask(BrokerOpen::kFile, "passwd-link").error, ELOOP);
  EXPECT_EQ(ask(BrokerOpen::kFile, "inside-link").error, ELOOP) << "not even one inside";
  EXPECT_EQ(ask(BrokerOpen::kFile, "etc-link/passwd").error, ELOOP);
  EXPECT_EQ(ask(BrokerOpen::kPath, "etc-link/passwd").error, ELOOP);
  const int as_directory = ask(BrokerOpen::kDirectory, "etc-link").error;
  EXPECT_TRUE(as_directory == ELOOP || as_directory == ENOTDIR) << as_directory;
  // A link swapped in for a directory the worker listed before: the same.
  fs::remove_all(tree_.source() / "dir");
  fs::create_directory_symlink("/root", tree_.source() / "dir");
  EXPECT_EQ(ask(BrokerOpen::kFile, "dir/inner.txt").error, ELOOP);
  EXPECT_EQ(broker_->stats().granted, 0u);
}

TEST_F(FileBrokerTest, ProcSelfIsOutOfReachEvenWithProcMountedInTheSource) {
  start();
  EXPECT_EQ(ask(BrokerOpen::kFile, "/proc/self/root/etc/passwd").error, EINVAL);
  EXPECT_EQ(ask(BrokerOpen::kFile, "../../../proc/self/environ").error, EINVAL);
  if (!running_as_root()) GTEST_SKIP() << "mounting a proc inside the source needs root";
  const fs::path proc = tree_.source() / "proc";
  fs::create_directory(proc);
  ASSERT_EQ(::mount("proc", proc.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr), 0);
  struct Unmount {
    fs::path path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{proc};
  // self is a symlink, PID/root and PID/fd/N are magic links: none is followed.
  EXPECT_EQ(ask(BrokerOpen::kFile, "proc/self/environ").error, ELOOP);
  const std::string pid = std::to_string(::getpid());
  EXPECT_EQ(ask(BrokerOpen::kFile, "proc/" + pid + "/root/etc/passwd").error, ELOOP);
  EXPECT_EQ(ask(BrokerOpen::kPath, "proc/" + pid + "/root").error, ELOOP);
  const UniqueFd mine(::open(outside_.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(ask(BrokerOpen::kFile, "proc/" + pid + "/fd/" + std::to_string(mine.get())).error,
            ELOOP);
  EXPECT_EQ(broker_->stats().granted, 0u);
}

TEST_F(FileBrokerTest, OverlongPathsAndMalformedPacketsAreRefusedAndServingGoesOn) {
  start();
  const std::string long_name(NAME_MAX + 1, 'n');
  EXPECT_EQ(ask(BrokerOpen::kFile, long_name).error, ENAMETOOLONG);
  std::string deep = "d";
  while (deep.size() + 2 <= PATH_MAX - 1) deep += "/d";
  ASSERT_EQ(deep.size(), PATH_MAX - 1u);  // the longest allowed: looked for, and not there
  EXPECT_EQ(ask(BrokerOpen::kFile, deep).error, ENOENT);
  EXPECT_EQ(ask(BrokerOpen::kFile, deep + "d").error, ENAMETOOLONG);
  EXPECT_EQ(ask(BrokerOpen::kFile, deep + "/d/d/d/d").error, ENAMETOOLONG);
  // A packet far over the limit arrives cut (SOCK_SEQPACKET) and is refused whole.
  send_packet(std::string(1, '\x02') + std::string(1, '\0') + std::string(60000, 'a'));
  EXPECT_EQ(receive().error, ENAMETOOLONG);
  send_packet("\x02");  // shorter than the header
  EXPECT_EQ(receive().error, EINVAL);
  send_packet(std::string("\x05\0open.txt", 10));  // no such kind
  EXPECT_EQ(receive().error, EINVAL);
  send_packet(std::string("\0\0open.txt", 10));
  EXPECT_EQ(receive().error, EINVAL);
  EXPECT_EQ(ask(BrokerOpen::kFile, "open.txt", 1).error, EINVAL) << "no root 1";
  EXPECT_EQ(ask(BrokerOpen::kFile, "open.txt", 255).error, EINVAL);
  // Still serving, in step.
  Answer ok = ask(BrokerOpen::kFile, "open.txt");
  ASSERT_EQ(ok.error, 0);
  EXPECT_EQ(read_all(ok.fd.get()), "open\n");
}

TEST_F(FileBrokerTest, OpensNoFifoOrDeviceAndNoDirectoryAsAFile) {
  start();
  ASSERT_EQ(::mkfifo((tree_.source() / "fifo").c_str(), 0666), 0);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(ask(BrokerOpen::kFile, "fifo").error, EINVAL);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s) << "a FIFO must not block it";
  EXPECT_EQ(ask(BrokerOpen::kDirectory, "fifo").error, ENOTDIR);
  EXPECT_EQ(ask(BrokerOpen::kFile, "dir").error, EISDIR);
  EXPECT_EQ(ask(BrokerOpen::kDirectory, "open.txt").error, ENOTDIR);
  if (running_as_root()) {
    // /dev/zero's numbers: opening it would hand out an endless file.
    ASSERT_EQ(::mknod((tree_.source() / "zero").c_str(), S_IFCHR | 0666, ::makedev(1, 5)), 0);
    EXPECT_EQ(ask(BrokerOpen::kFile, "zero").error, EINVAL);
  }
  EXPECT_EQ(broker_->stats().granted, 0u);
}

// The owner as the supervisor sees it (the worker's namespace shows most as 65534), for the
// same paths, under the same rules, and with no fd.
TEST_F(FileBrokerTest, TellsTheOwnerWithoutAnFd) {
  start();
  struct stat st {};
  ASSERT_EQ(::lstat((tree_.source() / "dir" / "inner.txt").c_str(), &st), 0);
  const Answer owner = ask(BrokerOpen::kOwner, "dir/inner.txt");
  ASSERT_EQ(owner.error, 0);
  ASSERT_TRUE(owner.owner);
  EXPECT_EQ(owner.owner->first, st.st_uid);
  EXPECT_EQ(owner.owner->second, st.st_gid);
  EXPECT_FALSE(owner.fd);
  EXPECT_TRUE(ask(BrokerOpen::kOwner, "passwd-link").owner) << "a link's own, not its target's";
  EXPECT_EQ(ask(BrokerOpen::kOwner, "etc-link/passwd").error, ELOOP);
  EXPECT_EQ(ask(BrokerOpen::kOwner, "../outside.txt").error, EINVAL);
  EXPECT_EQ(ask(BrokerOpen::kOwner, "/etc/shadow").error, EINVAL);
}

// Root mounting for a user grants that user's access, not root's: the broker's opens are
// checked against the user's uid, gid and supplementary groups.
TEST_F(FileBrokerTest, ActsWithTheMountsUserIdentityNotRoots) {
  if (!running_as_root()) GTEST_SKIP() << "taking another user's identity needs root";
  const passwd* pw = ::getpwnam("heddle-test");
  const group* share = ::getgrnam("heddle-test-share");
  if (pw == nullptr || share == nullptr) {
    GTEST_SKIP() << "heddle-test and heddle-test-share come with the test_user fixture";
  }
  const uid_t uid = pw->pw_uid;
  const gid_t gid = pw->pw_gid;
  const gid_t share_gid = share->gr_gid;
  tree_.write("users.txt", "the user's\n", 0600);
  ASSERT_EQ(::chown((tree_.source() / "users.txt").c_str(), uid, gid), 0);
  tree_.write("group.txt", "the group's\n", 0640);
  ASSERT_EQ(::chown((tree_.source() / "group.txt").c_str(), 0, share_gid), 0);
  fs::create_directory(tree_.source() / "closed");
  tree_.write("closed/in.txt", "closed\n", 0644);
  fs::permissions(tree_.source() / "closed", fs::perms(0700));  // root's
  start(uid, gid);
  EXPECT_EQ(ask(BrokerOpen::kFile, "users.txt").error, 0);
  EXPECT_EQ(ask(BrokerOpen::kFile, "group.txt").error, 0) << "through heddle-test-share";
  EXPECT_EQ(ask(BrokerOpen::kFile, "private.txt").error, EACCES) << "root's 0600 file";
  EXPECT_EQ(ask(BrokerOpen::kFile, "closed/in.txt").error, EACCES);
  EXPECT_EQ(ask(BrokerOpen::kPath, "closed/in.txt").error, EACCES);
  EXPECT_EQ(ask(BrokerOpen::kDirectory, "closed").error, EACCES);
}

// Fds a worker sends along are dropped by the kernel, never held by the supervisor.
TEST_F(FileBrokerTest, KeepsNoFdTheWorkerSends) {
  start();
  FdPair pipe = pipe_pair();
  const std::array<int, 1> fds{pipe.writer.get()};
  ipc::send_fds(worker_.get(), fds, ipc::encode_broker_request({BrokerOpen::kFile, 0, "open.txt"}));
  pipe.writer.reset();
  EXPECT_EQ(receive().error, 0);
  char byte;
  EXPECT_EQ(::read(pipe.reader.get(), &byte, 1), 0) << "the pipe's only writer was closed";
}

// A flood: requests as fast as the socket takes them, answers never read. The supervisor's
// side serves one at a time, so what it holds is bounded by the socket's buffer; it stops at
// once when asked, and it keeps no fd of its own open for the flood.
TEST_F(FileBrokerTest, AFloodBlocksOnlyItsOwnBrokerWhichStillStopsAtOnce) {
  const int fds_before = open_fd_count();
  start();
  const std::string request = ipc::encode_broker_request({BrokerOpen::kFile, 0, "open.txt"});
  ASSERT_EQ(::fcntl(worker_.get(), F_SETFL, O_NONBLOCK), 0);
  std::size_t sent = 0;
  // Until the socket takes no more for a while: the broker then waits for the worker to read.
  for (int refused = 0; refused < 50 && sent < 1000000;) {
    if (::send(worker_.get(), request.data(), request.size(), MSG_NOSIGNAL) >= 0) {
      ++sent;
      refused = 0;
    } else {
      ASSERT_EQ(errno, EAGAIN);
      ++refused;
      std::this_thread::sleep_for(10ms);
    }
  }
  EXPECT_GT(sent, 10u);
  const auto granted = broker_->stats().granted;
  EXPECT_LT(granted, sent) << "answers pile up only as far as the socket buffer takes them";
  // Held by the supervisor meanwhile: the broker socket and the root, plus the one fd being
  // answered (the rest are in flight, charged to the socket).
  EXPECT_LE(open_fd_count(), fds_before + 4);
  const auto stop_started = std::chrono::steady_clock::now();
  broker_->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - stop_started, 1s);
  broker_.reset();
  worker_.reset();
  EXPECT_EQ(open_fd_count(), fds_before) << "nothing of the flood is left open";
}

// Answered as fast as asked, one at a time: a flood that reads its answers costs time only.
TEST_F(FileBrokerTest, AFloodThatReadsItsAnswersIsServedInStep) {
  start();
  const int fds_before = open_fd_count();
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 20000; ++i) {
    const Answer answer = ask(BrokerOpen::kFile, i % 2 == 0 ? "private.txt" : "../outside.txt");
    ASSERT_EQ(answer.error, i % 2 == 0 ? 0 : EINVAL) << i;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, 30s);
  EXPECT_EQ(open_fd_count(), fds_before) << "every granted fd was the worker's, now closed";
  EXPECT_EQ(broker_->stats().granted, 10000u);
  EXPECT_EQ(broker_->stats().refused, 10000u);
}

// The worker's end closing ends the broker's thread on its own.
TEST_F(FileBrokerTest, EndsWhenTheWorkerGoes) {
  start();
  worker_.reset();
  const auto started = std::chrono::steady_clock::now();
  broker_.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
}

TEST(FileBrokerWire, ThePathRulesAreTheSameOnBothSides) {
  EXPECT_EQ(ipc::check_broker_path("."), 0);
  EXPECT_EQ(ipc::check_broker_path("a"), 0);
  EXPECT_EQ(ipc::check_broker_path("a/b.c/..d"), 0);
  EXPECT_EQ(ipc::check_broker_path("a/../b"), EINVAL);
  EXPECT_EQ(ipc::check_broker_path("/a"), EINVAL);
  EXPECT_EQ(ipc::check_broker_path("a/"), EINVAL);
  EXPECT_EQ(ipc::check_broker_path(std::string(PATH_MAX, 'a')), ENAMETOOLONG);
  EXPECT_EQ(ipc::broker_kind_for(O_RDWR | O_NOFOLLOW), std::nullopt) << "never for writing";
  EXPECT_EQ(ipc::broker_kind_for(O_RDONLY), std::nullopt) << "an open that would follow a link";
  EXPECT_EQ(ipc::broker_kind_for(O_RDONLY | O_NOFOLLOW | O_CREAT), std::nullopt);
  EXPECT_EQ(ipc::broker_kind_for(O_PATH | O_NOFOLLOW), BrokerOpen::kPath);
  EXPECT_EQ(ipc::broker_kind_for(O_RDONLY | O_DIRECTORY | O_NOFOLLOW), BrokerOpen::kDirectory);
  EXPECT_EQ(ipc::broker_kind_for(O_RDONLY | O_NOFOLLOW | O_NONBLOCK), BrokerOpen::kFile);
}

}  // namespace
}  // namespace heddle::test
