// Git LFS pointers as git-lfs reads and writes them, and the SHA-256 that names an object
// (heddle/lfs_pointer.h, heddle/sha256.h): valid and invalid input side by side.
#include <gtest/gtest.h>

#include <string>

#include "heddle/lfs_pointer.h"
#include "heddle/sha256.h"

namespace heddle {
namespace {

std::string sha256(const std::string& data, std::size_t chunk) {
  Sha256 hash;
  for (std::size_t at = 0; at < data.size(); at += chunk) {
    hash.update(std::string_view(data).substr(at, chunk));
  }
  return hash.hex_digest();
}

TEST(Sha256, KnownVectorsWhateverTheChunking) {
  EXPECT_EQ(sha256("", 1), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256("abc", 1), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  for (const std::size_t chunk : {1u, 7u, 56u, 64u, 1000u}) {
    EXPECT_EQ(sha256(two_blocks, chunk),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        << chunk;
  }
  EXPECT_EQ(sha256(std::string(1'000'000, 'a'), 4096),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

constexpr const char* kOid = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";

std::string pointer(const std::string& size = "12345") {
  return std::string("version https://git-lfs.github.com/spec/v1\noid sha256:") + kOid +
         "\nsize " + size + "\n";
}

TEST(LfsPointer, TheSpecsFormatParses) {
  const auto parsed = parse_lfs_pointer(pointer());
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->oid, kOid);
  EXPECT_EQ(parsed->size, 12345u);
  EXPECT_TRUE(parse_lfs_pointer(pointer("0")));
  std::string hawser = pointer();
  hawser.replace(hawser.find("git-lfs"), 7, "hawser");
  EXPECT_TRUE(parse_lfs_pointer(hawser)) << "the pre-release URL git-lfs still accepts";
  EXPECT_EQ(lfs_object_path("/r/.git/", kOid),
            std::string("/r/.git/lfs/objects/4d/7a/") + kOid);
}

TEST(LfsPointer, AnythingElseIsServedAsIs) {
  const std::string good = pointer();
  EXPECT_FALSE(parse_lfs_pointer(""));
  EXPECT_FALSE(parse_lfs_pointer(good.substr(0, good.size() - 1))) << "no final newline";
  EXPECT_FALSE(parse_lfs_pointer(good + "\n"));
  EXPECT_FALSE(parse_lfs_pointer(pointer("012")));
  EXPECT_FALSE(parse_lfs_pointer(pointer("-1")));
  EXPECT_FALSE(parse_lfs_pointer(pointer("99999999999999999999")));
  std::string upper = good;
  upper[upper.find(kOid)] = 'D';
  EXPECT_FALSE(parse_lfs_pointer(upper));
  std::string md5 = good;
  md5.replace(md5.find("sha256"), 6, "md5xxx");
  EXPECT_FALSE(parse_lfs_pointer(md5));
  std::string crlf = good;
  crlf.insert(crlf.find('\n'), "\r");
  EXPECT_FALSE(parse_lfs_pointer(crlf));
  // An extension needs its program: git-lfs would run it, we cannot.
  std::string ext = good;
  ext.insert(ext.find("oid "), "ext-0-foo sha256:" + std::string(kOid) + "\n");
  EXPECT_FALSE(parse_lfs_pointer(ext));
  std::string other_version = good;
  other_version.replace(other_version.find("v1"), 2, "v2");
  EXPECT_FALSE(parse_lfs_pointer(other_version));
  EXPECT_FALSE(parse_lfs_pointer(good + std::string(kMaxLfsPointerSize, ' ')));
}

// What capture stores for a changed filter=lfs file: git-lfs's pointer, byte for byte (the
// spec's example), which reads back as the same pointer.
TEST(LfsPointer, WritesThePointerGitLfsWrites) {
  const LfsPointer written{kOid, 12345};
  EXPECT_EQ(lfs_pointer_text(written), pointer());
  const auto read = parse_lfs_pointer(lfs_pointer_text(written));
  ASSERT_TRUE(read);
  EXPECT_EQ(read->oid, kOid);
  EXPECT_EQ(read->size, 12345u);
  const LfsPointer huge{kOid, 9223372036854775807u};  // git-lfs's limit: an int64
  EXPECT_EQ(lfs_pointer_text(huge), pointer("9223372036854775807"));
  EXPECT_TRUE(parse_lfs_pointer(lfs_pointer_text(huge)));
  EXPECT_LE(lfs_pointer_text(huge).size(), kMaxLfsPointerSize);
}

// git-lfs records an empty file as an empty blob, not as a pointer of size 0 (which it would
// still read).
TEST(LfsPointer, AnEmptyFilesPointerIsEmpty) {
  const std::string empty_oid = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  EXPECT_EQ(lfs_pointer_text(LfsPointer{empty_oid, 0}), "");
  EXPECT_FALSE(parse_lfs_pointer(""));
}

}  // namespace
}  // namespace heddle
