// The chat page served at GET /: one self-contained HTML file (no CDN, no build step) that talks to
// /v1/chat/completions with streaming and shows the reply as it arrives, with tokens per second.
#pragma once

#include <string_view>

namespace deepmoe::server {

std::string_view chat_page_html();

}  // namespace deepmoe::server
