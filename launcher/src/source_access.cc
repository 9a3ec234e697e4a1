#include "heddle/launcher/source_access.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <thread>

#include "heddle/error.h"

namespace heddle::launcher {
namespace {

bool resolves_as_itself(uid_t uid) { return ::geteuid() != 0 || uid == 0; }

// Raw system calls: they change the calling thread's credentials only.
void become(const FileIdentity& who) {
  if (::syscall(SYS_setgroups, who.groups.size(), who.groups.data()) != 0) {
    throw_errno("setgroups for " + who.describe());
  }
  if (::syscall(SYS_setresgid, who.gid, who.gid, who.gid) != 0) {
    throw_errno("setresgid for " + who.describe());
  }
  // Every uid leaves 0: the kernel clears this thread's capabilities, so it cannot come back.
  if (::syscall(SYS_setresuid, who.uid, who.uid, who.uid) != 0) {
    throw_errno("setresuid for " + who.describe());
  }
}

}  // namespace

std::string FileIdentity::describe() const {
  return "uid " + std::to_string(uid) + ", gid " + std::to_string(gid);
}

std::optional<Account> account_of(uid_t uid) {
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  while (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) == ERANGE &&
         buffer.size() < (std::size_t{1} << 20)) {
    buffer.resize(buffer.size() * 2);
  }
  if (found == nullptr) return std::nullopt;
  return Account{found->pw_name != nullptr ? found->pw_name : "",
                 found->pw_dir != nullptr ? found->pw_dir : "", found->pw_gid};
}

FileIdentity file_identity_of(uid_t uid, gid_t gid) {
  FileIdentity who{uid, gid, {gid}};
  const auto account = account_of(uid);
  if (!account) return who;
  const std::string& name = account->name;
  for (int count = 64;;) {
    std::vector<gid_t> groups(static_cast<std::size_t>(count));
    int found = count;
    if (::getgrouplist(name.c_str(), gid, groups.data(), &found) >= 0) {
      groups.resize(static_cast<std::size_t>(found));
      who.groups = std::move(groups);
      return who;
    }
    count = std::max(found, count * 2);  // glibc sets `found` to what it needs
    if (count > 65536) throw Error("supplementary groups of " + name, E2BIG);
  }
}

void run_with_identity(const FileIdentity& who, const std::function<void()>& work) {
  // A credential change makes the process non-dumpable (its /proc files root's, no ptrace by
  // the user while the thread runs); afterwards the process is root's alone again.
  const int dumpable = ::prctl(PR_GET_DUMPABLE);
  std::exception_ptr failure;
  std::thread thread([&] {
    try {
      become(who);
      work();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  thread.join();
  if (dumpable > 0) ::prctl(PR_SET_DUMPABLE, dumpable);
  if (failure) std::rethrow_exception(failure);
}

void as_mount_user(uid_t uid, gid_t gid, const std::function<void()>& work) {
  if (resolves_as_itself(uid)) {
    work();
  } else {
    run_with_identity(file_identity_of(uid, gid), work);
  }
}

OpenSource open_source_path(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) throw_errno(what);
  // Only trees and files are bound; opening a device to look at it could already act on it.
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
    throw Error(what + " is " + file_type_name(st.st_mode), EINVAL,
                "only directories and regular files are served");
  }
  const int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC |
                    (S_ISDIR(st.st_mode) ? O_DIRECTORY : O_NONBLOCK | O_NOCTTY);
  UniqueFd fd(::open(path.c_str(), flags));
  if (!fd) throw_errno(what);
  if (::fstat(fd.get(), &st) != 0) throw_errno("fstat " + path);
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {  // swapped since the lstat
    throw Error(what + " is " + file_type_name(st.st_mode), EINVAL);
  }
  return OpenSource{sandbox::CheckedPath{path, st.st_dev, st.st_ino, S_ISDIR(st.st_mode)},
                    std::move(fd)};
}

std::string file_type_name(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFLNK: return "a symlink";
    case S_IFIFO: return "a FIFO";
    case S_IFSOCK: return "a socket";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    default: return "of an unknown type";
  }
}

std::string mount_user_label(uid_t uid, gid_t gid) {
  if (::geteuid() != 0) return "you (uid " + std::to_string(::geteuid()) + ")";
  if (uid == 0) return "root";
  return FileIdentity{uid, gid, {}}.describe() + " (the mount's user)";
}

}  // namespace heddle::launcher
