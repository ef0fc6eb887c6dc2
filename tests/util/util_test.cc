#include <filesystem>

#include "absl/strings/cord.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "util/bearer_token.h"
#include "util/file.h"
#include "util/logging.h"
#include "util/sha256.h"
#include "util/status_macros.h"

namespace mixq {
namespace {

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, IsSha256HexAcceptsOnlyWhatSha256HexWrites) {
  EXPECT_TRUE(IsSha256Hex(Sha256Hex("abc")));
  EXPECT_FALSE(IsSha256Hex(""));
  EXPECT_FALSE(IsSha256Hex(std::string(63, 'a')));
  EXPECT_FALSE(IsSha256Hex(std::string(65, 'a')));
  EXPECT_FALSE(IsSha256Hex(std::string(64, 'A')));  // upper case
  EXPECT_FALSE(IsSha256Hex(std::string(64, 'g')));
}

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  MIXQ_ASSIGN_OR_RETURN(const int half, Half(x));
  MIXQ_ASSIGN_OR_RETURN(const int quarter, Half(half));
  return quarter;
}

absl::Status CheckEven(int x) {
  MIXQ_RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

TEST(StatusMacrosTest, PropagateErrorsAndValues) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_FALSE(CheckEven(3).ok());
}

TEST(StatusMacrosTest, AnnotateKeepsTheCode) {
  const absl::Status s = Annotate(absl::NotFoundError("gone"), "loading x");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "loading x: gone");
  EXPECT_TRUE(Annotate(absl::OkStatus(), "ctx").ok());
}

TEST(StatusMacrosTest, AnnotateKeepsThePayloads) {
  absl::Status marked = absl::ResourceExhaustedError("full");
  marked.SetPayload("type.test/Mark", absl::Cord("x"));
  const absl::Status s = Annotate(marked, "writing y");
  EXPECT_EQ(s.message(), "writing y: full");
  ASSERT_TRUE(s.GetPayload("type.test/Mark").has_value());
  EXPECT_EQ(std::string(*s.GetPayload("type.test/Mark")), "x");
}

TEST(FileTest, WriteThenReadAndErrors) {
  const std::string dir = ::testing::TempDir() + "/mixq_file_test";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/f.bin";
  ASSERT_TRUE(WriteFile(path, std::string("a\0b", 3)).ok());
  EXPECT_EQ(*ReadFile(path), std::string("a\0b", 3));
  EXPECT_EQ(ReadFile(path, 2).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReadFile(dir + "/missing").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadFile(dir).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ReadFile(dir + "/missing").status().message()),
              ::testing::HasSubstr("missing"));
  std::filesystem::remove_all(dir);
}

TEST(Sha256Test, HasherOfPiecesEqualsTheWhole) {
  const std::string data = "The quick brown fox jumps over the lazy dog";
  for (size_t cut : {size_t{0}, size_t{1}, size_t{20}, data.size()}) {
    Sha256Hasher hasher;
    hasher.Update(absl::string_view(data).substr(0, cut));
    hasher.Update(absl::string_view(data).substr(cut));
    EXPECT_EQ(hasher.HexDigest(), Sha256Hex(data)) << cut;
  }
  EXPECT_EQ(Sha256Hasher().HexDigest(), Sha256Hex(""));
}

// Chunks concatenate to the file, each at most the chunk size; consume may
// stop early; the digest is Sha256Hex of the whole file.
TEST(FileTest, ReadFileChunksAndDigestFile) {
  const std::string dir = ::testing::TempDir() + "/mixq_chunk_test";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/f.bin";
  std::string content;
  for (int i = 0; i < 10007; ++i) content.push_back(static_cast<char>(i * 31));
  ASSERT_TRUE(WriteFile(path, content).ok());
  for (size_t chunk :
       {size_t{1}, size_t{4096}, size_t{10007}, size_t{1} << 20}) {
    std::string read;
    int calls = 0;
    ASSERT_TRUE(ReadFileChunks(path, chunk, [&](absl::string_view piece) {
                  EXPECT_LE(piece.size(), chunk);
                  read.append(piece.data(), piece.size());
                  ++calls;
                  return true;
                }).ok());
    EXPECT_EQ(read, content) << chunk;
    EXPECT_EQ(calls, static_cast<int>((content.size() + chunk - 1) / chunk));
  }
  int calls = 0;
  ASSERT_TRUE(ReadFileChunks(path, 100, [&](absl::string_view) {
                return ++calls < 3;
              }).ok());
  EXPECT_EQ(calls, 3);
  absl::StatusOr<FileDigest> digest = DigestFile(path);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(digest->sha256, Sha256Hex(content));
  EXPECT_EQ(digest->size_bytes, static_cast<int64_t>(content.size()));

  ASSERT_TRUE(WriteFile(path, "").ok());
  EXPECT_EQ(DigestFile(path)->sha256, Sha256Hex(""));
  EXPECT_EQ(DigestFile(dir + "/missing").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(DigestFile(dir).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::filesystem::remove_all(dir);
}

TEST(LoggingTest, ValuesAreQuotedEscapedAndCut) {
  EXPECT_EQ(FormatLogValue("job-1"), "job-1");
  EXPECT_EQ(FormatLogValue(""), "\"\"");
  EXPECT_EQ(FormatLogValue("a b"), "\"a b\"");
  EXPECT_EQ(FormatLogValue("say \"hi\""), "\"say \\\"hi\\\"\"");
  // A client-sent value cannot forge a line of its own.
  EXPECT_EQ(FormatLogValue("x\n2026 INFO forged"), "\"x\\n2026 INFO forged\"");
  EXPECT_EQ(FormatLogValue(std::string("a\x01\tb\r", 5)), "\"a\\x01\\tb\\r\"");
  const std::string long_value(10000, 'j');
  const std::string logged = FormatLogValue(long_value);
  EXPECT_LT(logged.size(), kMaxLogValueBytes + 32);
  EXPECT_NE(logged.find("...(10000 bytes)"), std::string::npos);
}

TEST(BearerTokenTest, TrimsAndRefusesUnusableTokens) {
  auto token = ParseBearerToken("  s3cret-Token_1\n");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "s3cret-Token_1");
  for (const char* bad : {"", " \n", "two words", "tab\there", "nl\nin"}) {
    const auto parsed = ParseBearerToken(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(FileTest, ReadFlagFileNamesTheFlag) {
  const auto missing = ReadFlagFile("--tls-ca", "/no/such/file.pem", 1024);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("--tls-ca"), std::string::npos);
}

}  // namespace
}  // namespace mixq
