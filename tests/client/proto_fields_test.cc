#include "client/proto_fields.h"

#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/mixq.pb.h"
#include "tests/client/text_proto.h"

namespace mixq::client {
namespace {

using Rows = std::vector<std::pair<std::string, std::string>>;

TEST(SetFieldRowsTest, SetFieldsOnlyInNumberOrderDepthFirst) {
  const auto spec = ParseText<v1::JobSpec>(R"pb(
    name: "demo"
    model { filename: "m.onnx" content: "12345" }
    normalize { mean: 0.286 std: 0.353 }
    calib_size: 512
    search {
      bits: [ 8, 4, 2 ]
      budget { avg_bits: 4 }
      finetune_steps: 0
      seed: 7
      layers {
        name: "fc1.weight"
        bits: [ 8 ]
      }
      layers {
        name: "fc2.weight"
        bits: [ 6, 4 ]
      }
      pin_first_last: true
      learning_rate: 0.0001
    }
  )pb");
  EXPECT_EQ(SetFieldRows(spec),
            (Rows{{"name", "demo"},
                  {"model.content", "<5 bytes>"},  // field 1
                  {"model.filename", "m.onnx"},    // field 3
                  {"normalize.mean", "0.286"},
                  {"normalize.std", "0.353"},
                  {"calib_size", "512"},
                  {"search.bits", "8, 4, 2"},
                  {"search.budget.avg_bits", "4"},
                  {"search.finetune_steps", "0"},  // `optional`: set at 0
                  {"search.learning_rate", "0.0001"},
                  {"search.seed", "7"},
                  {"search.layers[0].name", "fc1.weight"},
                  {"search.layers[0].bits", "8"},
                  {"search.layers[1].name", "fc2.weight"},
                  {"search.layers[1].bits", "6, 4"},
                  {"search.pin_first_last", "true"}}));
}

TEST(SetFieldRowsTest, EmptyMessageHasNoRows) {
  EXPECT_TRUE(SetFieldRows(v1::JobSpec()).empty());
}

TEST(SetFieldRowsTest, EnumsByName) {
  v1::Job job;
  job.set_state(v1::SUCCEEDED);
  EXPECT_EQ(SetFieldRows(job), (Rows{{"state", "SUCCEEDED"}}));
}

}  // namespace
}  // namespace mixq::client
