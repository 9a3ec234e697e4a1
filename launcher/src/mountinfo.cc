#include "heddle/launcher/mountinfo.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <fstream>
#include <sstream>
#include <string_view>

#include "heddle/error.h"

namespace heddle::launcher {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(const std::string& field) {
  std::string out;
  out.reserve(field.size());
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && field.size() - i >= 4) {
      const std::string oct = field.substr(i + 1, 3);
      if (oct.find_first_not_of("01234567") == std::string::npos) {
        out.push_back(static_cast<char>(std::stoi(oct, nullptr, 8)));
        i += 3;
        continue;
      }
    }
    out.push_back(field[i]);
  }
  return out;
}

std::optional<MountEntry> parse_line(const std::string& line) {
  std::istringstream in(line);
  MountEntry entry;
  std::string dev;
  std::string root;
  std::string mount_point;
  if (!(in >> entry.id >> entry.parent_id >> dev >> root >> mount_point)) return std::nullopt;
  const auto colon = dev.find(':');
  if (colon == std::string::npos) return std::nullopt;
  // A malformed device number skips the line, as any other malformed field does.
  const auto number = [](std::string_view text, unsigned& out) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && end == text.data() + text.size();
  };
  const std::string_view device(dev);
  if (!number(device.substr(0, colon), entry.major) ||
      !number(device.substr(colon + 1), entry.minor)) {
    return std::nullopt;
  }
  entry.mount_point = unescape(mount_point);
  // Optional fields run up to a lone "-", then fstype and source.
  for (std::string word; in >> word;) {
    if (word == "-") {
      std::string fstype;
      std::string source;
      in >> fstype >> source;
      entry.fstype = unescape(fstype);
      entry.source = unescape(source);
      return entry;
    }
  }
  return std::nullopt;
}

}  // namespace

std::vector<MountEntry> read_mountinfo(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("read " + path, errno);
  std::vector<MountEntry> entries;
  for (std::string line; std::getline(in, line);) {
    if (auto entry = parse_line(line)) entries.push_back(std::move(*entry));
  }
  return entries;
}

std::optional<MountEntry> top_mount_at(const std::string& mount_point) {
  std::optional<MountEntry> top;
  // Later lines are mounted later, so the last match is the one on top.
  for (MountEntry& entry : read_mountinfo()) {
    if (entry.mount_point == mount_point) top = std::move(entry);
  }
  return top;
}

int mount_id_of(int fd) {
  struct statx st {};
  if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, 0, &st) != 0) {
    throw_errno("statx (mount id)");
  }
  if ((st.stx_mask & STATX_MNT_ID) == 0) throw Error("statx gave no mount id", ENOTSUP);
  return static_cast<int>(st.stx_mnt_id);
}

namespace {

// Linux 6.8's uapi value; Debian 12's headers predate it.
constexpr unsigned kStatxMntIdUnique = 0x4000U;

}  // namespace

MountIdentity mount_identity_of(int fd) {
  MountIdentity identity;
  struct statx st {};
  // An empty mask first: the id and the device, whoever owns the mount (see mount_id_of).
  if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, 0, &st) != 0) {
    throw_errno("statx (mount id)");
  }
  if ((st.stx_mask & STATX_MNT_ID) == 0) throw Error("statx gave no mount id", ENOTSUP);
  identity.id = static_cast<int>(st.stx_mnt_id);
  identity.major = st.stx_dev_major;
  identity.minor = st.stx_dev_minor;
  // The unique id where it can be had: FUSE refuses any non-empty mask (EACCES) to a caller
  // that is not the mount's user, as root is for a user's mount without allow_other. Then,
  // as before Linux 6.8, the id and the device name it.
  if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, kStatxMntIdUnique, &st) == 0 &&
      (st.stx_mask & kStatxMntIdUnique) != 0) {
    identity.unique = st.stx_mnt_id;
  }
  return identity;
}

std::optional<MountEntry> find_mount(const MountIdentity& mount,
                                     const std::vector<MountEntry>& mounts) {
  for (const MountEntry& entry : mounts) {
    if (entry.id == mount.id && entry.major == mount.major && entry.minor == mount.minor) {
      return entry;
    }
  }
  return std::nullopt;
}

UniqueFd open_mount(const MountIdentity& mount) {
  const std::optional<MountEntry> entry = find_mount(mount, read_mountinfo());
  if (!entry) return {};
  UniqueFd fd(::open(entry->mount_point.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return {};
  try {
    const MountIdentity found = mount_identity_of(fd.get());
    const bool same = found.id == mount.id && found.major == mount.major &&
                      found.minor == mount.minor &&
                      (mount.unique == 0 || found.unique == 0 || found.unique == mount.unique);
    if (!same) return {};
  } catch (const Error&) {
    return {};
  }
  return fd;
}

std::string fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

}  // namespace heddle::launcher
