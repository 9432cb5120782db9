// The console's static files, compiled in (webui/CMakeLists.txt generates the table from
// index.html, app.js and style.css). Immutable after start-up; safe from any thread.
#pragma once

#include <map>
#include <string>

namespace tandem::webui {

struct Asset {
  std::string content_type;
  std::string body;
};

// By file name: "index.html", "app.js", "style.css".
const std::map<std::string, Asset>& assets();

}  // namespace tandem::webui
