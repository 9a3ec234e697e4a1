// `demo`: the main job on an embedded default, as a user would check it by hand.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "heddle/error.h"
#include "heddle/ipc/message.h"
#include "heddle/launcher/mountinfo.h"
#include "heddle/sandbox/facts.h"

namespace heddle::launcher {
namespace fs = std::filesystem;
namespace {

// A private scratch directory, removed with everything in it.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "heddle-demo-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp " + pattern);
    path_ = pattern;
    // The worker serves a root mount as nobody: it must be able to reach the tree.
    fs::permissions(path_, fs::perms(0755));
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const fs::path& path, const std::string& content, fs::perms mode) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << content;
  fs::permissions(path, mode);
}

void make_demo_tree(const fs::path& root) {
  const auto regular = fs::perms(0644);
  write_file(root / "README.txt",
             "This tree is served by heddle-fuse-worker from inside its sandbox.\n", regular);
  write_file(root / "src" / "main.rs", "fn main() {\n    println!(\"hello, heddle\");\n}\n", regular);
  write_file(root / "docs" / "guide" / "mounting.md", "# Mounting\n\nRead-only, always.\n", regular);
  write_file(root / "tools" / "build.sh", "#!/bin/sh\necho building\n", fs::perms(0755));
  std::string big;
  for (int i = 0; i < 20000; ++i) big += "line " + std::to_string(i) + "\n";
  write_file(root / "data" / "lines.txt", big, regular);
  fs::create_directory_symlink("../docs/guide", root / "src" / "guide");
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_directory() && !entry.is_symlink()) fs::permissions(entry.path(), fs::perms(0755));
  }
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

char type_of(const fs::directory_entry& entry) {
  if (entry.is_symlink()) return 'l';
  if (entry.is_directory()) return 'd';
  return '-';
}

}  // namespace

int demo_command(const LauncherEnvironment& env) {
  ScratchDir scratch;
  const fs::path source = scratch.path() / "source";
  const fs::path mountpoint = scratch.path() / "mnt";
  make_demo_tree(source);
  fs::create_directory(mountpoint);
  fs::permissions(source, fs::perms(0755));

  MountArgs args;
  args.dir = source.string();
  args.mountpoint = mountpoint.string();
  PreparedMount prepared = prepare_mount(args, env.dirs);
  auto supervisor = Supervisor::spawn(std::move(prepared.spec), env.supervisor_options(),
                                      std::move(prepared.mountpoint));
  std::cout << "== mounted " << source.string() << " at " << mountpoint.string()
            << " (sandboxed worker pid " << supervisor->pid() << ")\n";

  std::cout << "\n== listing through the mount\n";
  int files = 0;
  int identical = 0;
  for (auto it = fs::recursive_directory_iterator(mountpoint); it != fs::end(it); ++it) {
    const fs::directory_entry& entry = *it;
    const fs::path relative = entry.path().lexically_relative(mountpoint);
    const auto mode = static_cast<unsigned>(entry.symlink_status().permissions());
    std::cout << "  " << type_of(entry) << " " << std::oct << (mode & 0777) << std::dec << " ";
    if (entry.is_symlink()) {
      std::cout << relative.string() << " -> " << fs::read_symlink(entry.path()).string() << "\n";
      it.disable_recursion_pending();
      continue;
    }
    if (entry.is_regular_file()) {
      ++files;
      const bool same = slurp(entry.path()) == slurp(source / relative);
      identical += same ? 1 : 0;
      std::cout << relative.string() << " (" << entry.file_size() << " bytes"
                << (same ? ", identical to source" : ", DIFFERS from source") << ")\n";
    } else {
      std::cout << relative.string() << "/\n";
    }
  }
  std::cout << "\n== README.txt read through the mount\n  " << slurp(mountpoint / "README.txt");

  std::cout << "\n== Status reply\n  " << ipc::encode_body(supervisor->status()) << "\n";
  const sandbox::SandboxFacts facts = sandbox::read_facts(supervisor->pid());
  std::cout << "\n== the worker's sandbox, from /proc/" << supervisor->pid() << "\n"
            << facts.describe();

  supervisor->unmount();
  const auto top = top_mount_at(mountpoint.string());
  const bool gone = !top || top->fstype != kFuseType;
  std::cout << "\n== unmounted: " << (gone ? "no mount left at " : "MOUNT STILL AT ")
            << mountpoint.string() << "\n";

  const bool ok = files > 0 && identical == files && facts.confined() && gone;
  std::cout << "\n" << (ok ? "demo OK" : "demo FAILED") << ": " << identical << "/" << files
            << " files identical, sandbox " << (facts.confined() ? "confined" : "NOT confined")
            << "\n";
  return ok ? 0 : 1;
}

}  // namespace heddle::launcher
