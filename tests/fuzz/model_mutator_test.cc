// MutateModel (the fuzzer's structure-aware mutator) and a short in-process
// fuzz run: a chain of mutations of the committed poison seeds, each one run
// through the import target (import_fuzzer.h), which aborts on a broken
// contract. Seeded, so a failure reproduces.
#include "tests/fuzz/model_mutator.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/fuzz/import_fuzzer.h"
#include "util/file.h"

namespace mixq::fuzz {
namespace {

// The committed corpus' poison models: an MLP with 3e38 weights and one
// with a Gemm alpha of 1e38 (in tests/fuzz/corpus, named by SHA-1).
constexpr const char* kSeeds[] = {
    "deee08856bb85ecacd226af7b889a609858116c3",
    "f59d4dbb30ac0fa0d9093f769a91e73c58702fb2",
};
constexpr size_t kMaxSize = 1 << 20;
constexpr int kChainLength = 2000;

std::string Seed(const char* name) {
  const absl::StatusOr<std::string> bytes =
      ReadFile(absl::StrCat(MIXQ_SOURCE_DIR "/tests/fuzz/corpus/", name));
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : std::string();
}

TEST(MutateModelTest, EditsParseAndDiffer) {
  const std::string seed = Seed(kSeeds[0]);
  int changed = 0;
  for (uint32_t s = 0; s < 200; ++s) {
    std::string bytes = seed;
    if (!MutateModel(&bytes, s, kMaxSize)) continue;
    onnx::ModelProto model;
    EXPECT_TRUE(model.ParseFromString(bytes)) << "seed " << s;
    EXPECT_LE(bytes.size(), kMaxSize);
    if (bytes != seed) ++changed;
  }
  EXPECT_GT(changed, 150);
}

TEST(MutateModelTest, RefusesWhatIsNotAModel) {
  std::string bytes = "not a model \xff\xff";
  EXPECT_FALSE(MutateModel(&bytes, 1, kMaxSize));
  EXPECT_EQ(bytes, "not a model \xff\xff");
  std::string small = Seed(kSeeds[0]);
  EXPECT_FALSE(MutateModel(&small, 1, 10));
}

TEST(MutateModelTest, DeterministicForASeed) {
  std::string a = Seed(kSeeds[1]);
  std::string b = a;
  MutateModel(&a, 42, kMaxSize);
  MutateModel(&b, 42, kMaxSize);
  EXPECT_EQ(a, b);
}

// Each mutant goes through RunImport; a contract violation or a crash
// (an abort in a quantizer, say) fails the test.
TEST(MutateModelTest, MutantChainsRunThroughTheImportTarget) {
  int ran = 0;
  for (const char* name : kSeeds) {
    std::string bytes = Seed(name);
    for (uint32_t s = 0; s < kChainLength; ++s) {
      std::string next = bytes;
      if (!MutateModel(&next, s * 7919u + 1, kMaxSize)) continue;
      const Outcome outcome = RunImport(next);
      if (outcome == Outcome::kRan) ++ran;
      // Keep walking from mutants that still import, as a fuzzer keeps
      // inputs that reach new code; restart from the seed otherwise.
      bytes = outcome >= Outcome::kImported ? next : Seed(name);
    }
  }
  EXPECT_GT(ran, 0);
}

}  // namespace
}  // namespace mixq::fuzz
