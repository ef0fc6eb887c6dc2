// Escaping text for HTML and SVG documents (the `mixq report` page). Job,
// layer and file names come from users: everything the report prints goes
// through here. Pure functions, thread-safe.
#ifndef MIXQ_CLIENT_HTML_ESCAPE_H_
#define MIXQ_CLIENT_HTML_ESCAPE_H_

#include <string>

#include "absl/strings/string_view.h"

namespace mixq::client {

// `text` with &, <, >, " and ' replaced by character references, safe in
// element content and in quoted attribute values. Bytes that are not valid
// UTF-8 become U+FFFD, and control characters other than tab and newline
// are dropped, so the page stays well-formed whatever the input.
std::string HtmlEscape(absl::string_view text);

}  // namespace mixq::client

#endif  // MIXQ_CLIENT_HTML_ESCAPE_H_
