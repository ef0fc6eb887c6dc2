#include "client/proto_fields.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.h"

namespace mixq::client {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Element `index` of a repeated scalar field, or the singular field's value
// when index < 0.
std::string ScalarText(const Message& message, const FieldDescriptor& field,
                       int index) {
  const Reflection& r = *message.GetReflection();
  const bool repeated = index >= 0;
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat(repeated ? r.GetRepeatedInt32(message, &field, index)
                                   : r.GetInt32(message, &field));
    case FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat(repeated ? r.GetRepeatedInt64(message, &field, index)
                                   : r.GetInt64(message, &field));
    case FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat(repeated ? r.GetRepeatedUInt32(message, &field, index)
                                   : r.GetUInt32(message, &field));
    case FieldDescriptor::CPPTYPE_UINT64:
      return absl::StrCat(repeated ? r.GetRepeatedUInt64(message, &field, index)
                                   : r.GetUInt64(message, &field));
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return absl::StrCat(repeated ? r.GetRepeatedDouble(message, &field, index)
                                   : r.GetDouble(message, &field));
    case FieldDescriptor::CPPTYPE_FLOAT:
      return absl::StrCat(repeated ? r.GetRepeatedFloat(message, &field, index)
                                   : r.GetFloat(message, &field));
    case FieldDescriptor::CPPTYPE_BOOL:
      return (repeated ? r.GetRepeatedBool(message, &field, index)
                       : r.GetBool(message, &field))
                 ? "true"
                 : "false";
    case FieldDescriptor::CPPTYPE_ENUM:
      return (repeated ? r.GetRepeatedEnum(message, &field, index)
                       : r.GetEnum(message, &field))
          ->name();
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string value = repeated ? r.GetRepeatedString(message, &field, index)
                                   : r.GetString(message, &field);
      if (field.type() == FieldDescriptor::TYPE_BYTES) {
        return absl::StrCat("<", value.size(), " bytes>");
      }
      return value;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;  // not a scalar: the caller recurses
  }
  return "";
}

void AppendRows(const Message& message, const std::string& prefix,
                std::vector<std::pair<std::string, std::string>>* rows) {
  const Reflection& r = *message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r.ListFields(message, &fields);  // set fields, by number
  for (const FieldDescriptor* field : fields) {
    const std::string path = absl::StrCat(prefix, field->name());
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (!field->is_repeated()) {
        AppendRows(r.GetMessage(message, field), absl::StrCat(path, "."), rows);
        continue;
      }
      for (int i = 0; i < r.FieldSize(message, field); ++i) {
        AppendRows(r.GetRepeatedMessage(message, field, i),
                   absl::StrCat(path, "[", i, "]."), rows);
      }
      continue;
    }
    if (!field->is_repeated()) {
      rows->emplace_back(path, ScalarText(message, *field, -1));
      continue;
    }
    std::vector<std::string> values;
    for (int i = 0; i < r.FieldSize(message, field); ++i) {
      values.push_back(ScalarText(message, *field, i));
    }
    rows->emplace_back(path, absl::StrJoin(values, ", "));
  }
}

}  // namespace

std::vector<std::pair<std::string, std::string>> SetFieldRows(
    const Message& message) {
  std::vector<std::pair<std::string, std::string>> rows;
  AppendRows(message, "", &rows);
  return rows;
}

}  // namespace mixq::client
