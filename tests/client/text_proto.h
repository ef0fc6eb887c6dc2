// Test helper: protos from text format, failing the test on a parse error.
#ifndef MIXQ_TESTS_CLIENT_TEXT_PROTO_H_
#define MIXQ_TESTS_CLIENT_TEXT_PROTO_H_

#include <string>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace mixq::client {

template <typename T>
T ParseText(const std::string& text) {
  T message;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &message))
      << text;
  return message;
}

}  // namespace mixq::client

#endif  // MIXQ_TESTS_CLIENT_TEXT_PROTO_H_
