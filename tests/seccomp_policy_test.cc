// The compiled seccomp program, run in process by a small classic-BPF interpreter over made-up
// syscalls: what is denied and what stays allowed, side by side, without loading the filter.
#include "seccomp_policy.h"

#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include <array>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using heddle::sandbox::detail::compile_seccomp_policy;

// The kernel's evaluation of a filter (no extensions: libseccomp emits none).
std::uint32_t run_filter(const std::vector<sock_filter>& program, const seccomp_data& data) {
  std::uint32_t acc = 0;
  std::array<std::uint32_t, BPF_MEMWORDS> mem{};
  for (std::size_t pc = 0; pc < program.size(); ++pc) {
    const sock_filter& insn = program[pc];
    switch (insn.code) {
      case BPF_LD | BPF_W | BPF_ABS:
        if (insn.k + 4 > sizeof data || insn.k % 4 != 0) throw std::out_of_range("load");
        std::memcpy(&acc, reinterpret_cast<const char*>(&data) + insn.k, 4);
        break;
      case BPF_LD | BPF_MEM:
        acc = mem.at(insn.k);
        break;
      case BPF_ST:
        mem.at(insn.k) = acc;
        break;
      case BPF_ALU | BPF_AND | BPF_K:
        acc &= insn.k;
        break;
      case BPF_RET | BPF_K:
        return insn.k;
      case BPF_JMP | BPF_JA:
        pc += insn.k;
        break;
      case BPF_JMP | BPF_JEQ | BPF_K:
        pc += acc == insn.k ? insn.jt : insn.jf;
        break;
      case BPF_JMP | BPF_JGT | BPF_K:
        pc += acc > insn.k ? insn.jt : insn.jf;
        break;
      case BPF_JMP | BPF_JGE | BPF_K:
        pc += acc >= insn.k ? insn.jt : insn.jf;
        break;
      case BPF_JMP | BPF_JSET | BPF_K:
        pc += (acc & insn.k) != 0 ? insn.jt : insn.jf;
        break;
      default:
        throw std::invalid_argument("opcode " + std::to_string(insn.code));
    }
  }
  throw std::out_of_range("the program ran off its end");
}

constexpr std::uint32_t kAllow = SECCOMP_RET_ALLOW;
constexpr std::uint32_t kEperm = SECCOMP_RET_ERRNO | EPERM;
constexpr std::uint32_t kEnosys = SECCOMP_RET_ERRNO | ENOSYS;
constexpr std::uint32_t kKill = SECCOMP_RET_KILL_PROCESS;

struct Call {
  const char* name;
  long nr;
  std::array<std::uint64_t, 6> args;
  std::uint32_t expected;
};

class SeccompPolicy : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    program_ = new std::vector<sock_filter>(compile_seccomp_policy());
  }
  static void TearDownTestSuite() { delete program_; }

  static std::uint32_t verdict(long nr, const std::array<std::uint64_t, 6>& args,
                               std::uint32_t arch = seccomp_arch_native()) {
    seccomp_data data{};
    data.nr = static_cast<int>(nr);
    data.arch = arch;
    std::memcpy(data.args, args.data(), sizeof data.args);
    return run_filter(*program_, data);
  }

  static inline std::vector<sock_filter>* program_ = nullptr;
};

TEST_F(SeccompPolicy, FitsTheKernelsLimits) {
  ASSERT_FALSE(program_->empty());
  EXPECT_LE(program_->size(), static_cast<std::size_t>(BPF_MAXINSNS));
}

TEST_F(SeccompPolicy, DeniesWhatEscapesAndAllowsWhatAWorkerDoes) {
  constexpr std::uint64_t kThread = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
                                    CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS |
                                    CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
  const Call calls[] = {
      {"read", SYS_read, {}, kAllow},
      {"openat", SYS_openat, {}, kAllow},
      {"mount", SYS_mount, {}, kEperm},
      {"umount2", SYS_umount2, {}, kEperm},
      {"pivot_root", SYS_pivot_root, {}, kEperm},
      {"open_tree", SYS_open_tree, {}, kEperm},
      {"mount_setattr", SYS_mount_setattr, {}, kEperm},
      {"unshare", SYS_unshare, {}, kEperm},
      {"setns", SYS_setns, {}, kEperm},
      {"ptrace", SYS_ptrace, {}, kEperm},
      {"bpf", SYS_bpf, {}, kEperm},
      {"keyctl", SYS_keyctl, {}, kEperm},
      {"io_uring_setup", SYS_io_uring_setup, {}, kEperm},
      {"open_by_handle_at", SYS_open_by_handle_at, {}, kEperm},
      {"userfaultfd", SYS_userfaultfd, {}, kEperm},
      // clone3's flags sit behind a pointer: libc must fall back to clone.
      {"clone3", SYS_clone3, {}, kEnosys},
      {"clone: a thread", SYS_clone, {kThread}, kAllow},
      {"clone: fork", SYS_clone, {SIGCHLD}, kAllow},
      {"clone: a user namespace", SYS_clone, {CLONE_NEWUSER | SIGCHLD}, kEperm},
      {"clone: a mount namespace", SYS_clone, {CLONE_NEWNS}, kEperm},
      {"clone: a thread in a new net namespace", SYS_clone, {kThread | CLONE_NEWNET}, kEperm},
      {"ioctl FIONREAD", SYS_ioctl, {0, FIONREAD}, kAllow},
      {"ioctl TCGETS", SYS_ioctl, {0, TCGETS}, kAllow},
      {"ioctl TIOCSTI", SYS_ioctl, {0, TIOCSTI}, kEperm},
      {"ioctl TIOCLINUX", SYS_ioctl, {0, TIOCLINUX}, kEperm},
      // The kernel reads ioctl's command as 32 bits: high bits must not hide TIOCSTI.
      {"ioctl TIOCSTI, high bits set", SYS_ioctl, {0, 0xffffffff00000000u | TIOCSTI}, kEperm},
  };
  for (const Call& call : calls) {
    EXPECT_EQ(verdict(call.nr, call.args), call.expected) << call.name;
  }
}

TEST_F(SeccompPolicy, AnotherArchitectureIsKilled) {
  const std::uint32_t other =
      seccomp_arch_native() == AUDIT_ARCH_X86_64 ? AUDIT_ARCH_I386 : AUDIT_ARCH_X86_64;
  EXPECT_EQ(verdict(SYS_read, {}, other), kKill);
  EXPECT_EQ(verdict(SYS_read, {}), kAllow);
#ifdef __x86_64__
  // x32 calls carry the x86_64 arch token: they are killed too, not matched as x86_64 calls.
  EXPECT_EQ(verdict(0x40000000 | SYS_mount, {}), kKill);
#endif
}

}  // namespace
