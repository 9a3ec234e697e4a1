#include "heddle/launcher/host_checks.h"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "heddle/error.h"
#include "heddle/process.h"

namespace heddle::launcher {
namespace {

std::string octal_mode(mode_t mode) {
  std::ostringstream out;
  out << '0' << std::oct << (mode & 07777);
  return out.str();
}

std::string proc_status_field(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) {
      std::string value = line.substr(key.size() + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      return value;
    }
  }
  return "";
}

}  // namespace

std::string read_sysctl(const std::string& path) {
  std::ifstream in(path);
  std::string value;
  if (!(in >> value)) return "";
  return value;
}

bool can_mount_directly() {
  if (::geteuid() != 0) return false;
  // Root of a container's user namespace owns no host mount namespace: it needs fusermount3.
  std::ifstream in("/proc/self/uid_map");
  unsigned long inside = 1;
  unsigned long outside = 1;
  unsigned long count = 0;
  return static_cast<bool>(in >> inside >> outside >> count) && inside == 0 && outside == 0 &&
         count == 4294967295UL;
}

void require_fuse_device() {
  struct stat st {};
  if (::stat(kFuseDevice, &st) != 0) {
    throw_errno(std::string("stat ") + kFuseDevice,
                "the FUSE device is missing: load the module (modprobe fuse) and install the fuse3 "
                "package, whose udev rule creates it");
  }
  if (!S_ISCHR(st.st_mode) || ::major(st.st_rdev) != 10 || ::minor(st.st_rdev) != 229) {
    throw Error(std::string(kFuseDevice) + " is not the FUSE character device (10:229)", ENODEV,
                "recreate it: rm /dev/fuse && modprobe -r fuse && modprobe fuse");
  }
  if (::access(kFuseDevice, R_OK | W_OK) != 0) {
    throw_errno(std::string("open ") + kFuseDevice + " for reading and writing",
                std::string("it has mode ") + octal_mode(st.st_mode) + ", owner " +
                    std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid) +
                    "; stock distributions make it 0666 through udev (KERNEL==\"fuse\", "
                    "MODE=\"0666\"), or grant a group: chgrp fuse /dev/fuse && chmod 0660 "
                    "/dev/fuse && usermod -aG fuse $USER");
  }
}

std::string require_fusermount() {
  const std::string path = find_on_path(kFusermount);
  if (path.empty()) {
    throw Error(std::string(kFusermount) + " is not on PATH", ENOENT,
                "install the fuse3 package (apt install fuse3, or dnf install fuse3); mounting "
                "without root needs its setuid helper");
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno("stat " + path);
  struct statvfs vfs {};
  const bool nosuid_fs = ::statvfs(path.c_str(), &vfs) == 0 && (vfs.f_flag & ST_NOSUID) != 0;
  if ((st.st_mode & S_ISUID) == 0 || st.st_uid != 0 || nosuid_fs) {
    throw Error(path + " is not setuid root (mode " + octal_mode(st.st_mode) + ", owner " +
                    std::to_string(st.st_uid) + (nosuid_fs ? ", on a nosuid mount" : "") + ")",
                EPERM,
                "reinstall the fuse3 package (apt install --reinstall fuse3) so its helper is "
                "mode 4755 root, or mount as root");
  }
  require_setuid_possible();
  return path;
}

void require_setuid_possible() {
  if (proc_status_field("NoNewPrivs") == "1") {
    throw Error("this process runs with no_new_privs", EPERM,
                std::string("the kernel ignores the setuid bit of ") + kFusermount +
                    " under no_new_privs (systemd's NoNewPrivileges=, a container's "
                    "no-new-privileges); start the launcher without it, or mount as root");
  }
}

void require_user_allow_other() {
  std::ifstream in(kFuseConf);
  for (std::string line; std::getline(in, line);) {
    line.erase(0, line.find_first_not_of(" \t"));
    line.erase(line.find_last_not_of(" \t\r") + 1);
    if (line == "user_allow_other") return;
  }
  throw Error(std::string("allow_other without root needs user_allow_other in ") + kFuseConf,
              EPERM,
              std::string("add the line user_allow_other to ") + kFuseConf +
                  " (as root), or mount without --allow-other");
}

}  // namespace heddle::launcher
