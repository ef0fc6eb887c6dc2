#include "client/html_escape.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mixq::client {
namespace {

TEST(HtmlEscapeTest, Table) {
  struct Case {
    std::string in;
    std::string out;
  };
  const std::vector<Case> cases = {
      {"", ""},
      {"fc1.weight", "fc1.weight"},
      {"<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"},
      {"a & b", "a &amp; b"},
      {"\"q\" 'a'", "&quot;q&quot; &#39;a&#39;"},
      {"&amp;", "&amp;amp;"},
      {"tab\tnew\nline", "tab\tnew\nline"},
      {std::string("nul\0bell\a", 9), "nulbell"},
      {"caf\xC3\xA9 \xE2\x86\x92 \xF0\x9F\x98\x80",
       "caf\xC3\xA9 \xE2\x86\x92 \xF0\x9F\x98\x80"},
      {"bad \xFF byte", "bad \xEF\xBF\xBD byte"},
      {"cut \xC3", "cut \xEF\xBF\xBD"},
      {"overlong \xC0\xBC", "overlong \xEF\xBF\xBD\xEF\xBF\xBD"},
      {"surrogate \xED\xA0\x80",
       "surrogate \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
  };
  for (const Case& c : cases) EXPECT_EQ(HtmlEscape(c.in), c.out) << c.in;
}

}  // namespace
}  // namespace mixq::client
