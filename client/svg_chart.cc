#include "client/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/html_escape.h"

namespace mixq::client {
namespace {

// Layout in pixels.
constexpr int kTitleBaseline = 20;
constexpr int kPlotTop = 36;
constexpr int kXyLeftMargin = 72;
constexpr int kXyBottomMargin = 48;
constexpr int kLegendWidth = 190;
constexpr int kLegendRowHeight = 18;
constexpr int kLegendSwatchWidth = 18;
constexpr int kTickLength = 4;
constexpr int kXTickLabelOffset = 16;
constexpr int kAxisLabelOffset = 38;
constexpr int kYAxisLabelOffset = 56;
constexpr double kPointRadius = 3.5;
constexpr double kLineWidth = 2;
constexpr int kXTickCount = 7;
constexpr int kYTickCount = 6;
// Characters of a legend entry or bar label shown before shortening.
constexpr size_t kMaxLegendChars = 26;
constexpr size_t kMaxBarLabelChars = 36;
// Bar chart rows and the label column's width per character (11 px text).
constexpr int kBarRowHeight = 20;
constexpr int kBarHeight = 14;
constexpr int kBarBottomMargin = 44;
constexpr int kBarRightMargin = 40;
constexpr int kPixelsPerLabelChar = 7;
constexpr int kMinBarLabelWidth = 60;
constexpr int kBarValueGap = 4;
constexpr char kAxisColor[] = "#444";
constexpr char kGridColor[] = "#e4e4e4";
constexpr char kMutedTextColor[] = "#666";
// The nice steps within a power of ten.
constexpr double kNiceMultiples[] = {1, 2, 5, 10};
// Tick arithmetic's tolerance, relative to the step.
constexpr double kTickEpsilon = 1e-9;
// A flat range [v, v] is widened by this fraction of |v| each way (by 1 at 0).
constexpr double kFlatRangePad = 0.1;
// Below this a tick label prints as 0 (no "-0" or "1e-17" from rounding).
constexpr double kZeroLabel = 1e-12;

// A coordinate or length, to a tenth of a pixel.
std::string Px(double value) { return absl::StrFormat("%.1f", value); }

// A tick label: up to 6 significant digits, no trailing zeros.
std::string TickLabel(double value) {
  if (std::abs(value) < kZeroLabel) value = 0;
  return absl::StrFormat("%.6g", value);
}

// Whether `byte` begins a UTF-8 character (is not a continuation byte).
bool StartsCharacter(char byte) {
  return (static_cast<unsigned char>(byte) & 0xC0) != 0x80;
}

// `text` shortened to its last `max_chars` characters after "…" (the end of
// a layer name tells it from its neighbours), counting UTF-8 characters.
std::string ShortenFront(const std::string& text, size_t max_chars) {
  std::vector<size_t> starts;  // byte offset of each character
  for (size_t i = 0; i < text.size(); ++i) {
    if (StartsCharacter(text[i])) starts.push_back(i);
  }
  if (starts.size() <= max_chars) return text;
  return absl::StrCat("…", text.substr(starts[starts.size() - max_chars + 1]));
}

// As ShortenFront, keeping the beginning instead.
std::string ShortenBack(const std::string& text, size_t max_chars) {
  size_t chars = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (StartsCharacter(text[i]) && ++chars == max_chars) {
      return text.size() - i <= 1 ? text : absl::StrCat(text.substr(0, i), "…");
    }
  }
  return text;
}

std::string Title(const std::string& tooltip) {
  return tooltip.empty()
             ? ""
             : absl::StrCat("<title>", HtmlEscape(tooltip), "</title>");
}

std::string SvgOpen(const std::string& id, int width, int height,
                    const std::string& title) {
  return absl::StrCat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"", HtmlEscape(id),
      "\" class=\"chart\" width=\"", width, "\" height=\"", height,
      "\" viewBox=\"0 0 ", width, " ", height,
      "\" font-family=\"sans-serif\" font-size=\"11\" role=\"img\">", "<title>",
      HtmlEscape(title), "</title>", "<text x=\"", width / 2, "\" y=\"",
      kTitleBaseline,
      "\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">",
      HtmlEscape(title), "</text>");
}

bool Finite(const ChartPoint& p) {
  return std::isfinite(p.x) && std::isfinite(p.y);
}

// A linear map from [lo, hi] onto [from, to] (to < from for the y axis).
struct Scale {
  double lo, hi, from, to;
  double operator()(double v) const {
    return from + (v - lo) / (hi - lo) * (to - from);
  }
};

// The ticks of an axis over the data range [lo, hi] and its overrides.
std::vector<double> AxisTicks(const ChartAxis& axis, double lo, double hi,
                              int count) {
  if (axis.min.has_value()) lo = *axis.min;
  if (axis.max.has_value()) hi = *axis.max;
  std::vector<double> ticks = NiceTicks(lo, hi, count, axis.integer_ticks);
  // An override is the range shown: no tick outside it.
  if (axis.min.has_value() && axis.max.has_value() && *axis.max > *axis.min) {
    ticks.erase(std::remove_if(ticks.begin(), ticks.end(),
                               [&](double t) {
                                 return t < *axis.min - kTickEpsilon ||
                                        t > *axis.max + kTickEpsilon;
                               }),
                ticks.end());
    ticks.insert(ticks.begin(), *axis.min);
    ticks.push_back(*axis.max);
    ticks.erase(std::unique(ticks.begin(), ticks.end(),
                            [](double a, double b) {
                              return std::abs(a - b) < kTickEpsilon;
                            }),
                ticks.end());
  }
  return ticks;
}

}  // namespace

std::vector<double> NiceTicks(double lo, double hi, int max_count,
                              bool integer_only) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (hi < lo) std::swap(lo, hi);
  if (hi - lo <
      std::numeric_limits<double>::epsilon() * std::max(1.0, std::abs(lo))) {
    const double pad =
        integer_only || lo == 0 ? 1 : std::abs(lo) * kFlatRangePad;
    lo -= pad;
    hi += pad;
  }
  max_count = std::max(max_count, 2);
  const double raw = (hi - lo) / (max_count - 1);
  const double magnitude = std::pow(10, std::floor(std::log10(raw)));
  double step = magnitude * kNiceMultiples[std::size(kNiceMultiples) - 1];
  for (double multiple : kNiceMultiples) {
    if (multiple * magnitude >= raw * (1 - kTickEpsilon)) {
      step = multiple * magnitude;
      break;
    }
  }
  if (integer_only) step = std::max(1.0, std::ceil(step));
  const double first = std::floor(lo / step + kTickEpsilon) * step;
  const int count =
      static_cast<int>(std::ceil((hi - first) / step - kTickEpsilon)) + 1;
  std::vector<double> ticks;
  for (int i = 0; i < count; ++i) ticks.push_back(first + i * step);
  return ticks;
}

bool HasData(const XyChart& chart) {
  for (const ChartSeries& series : chart.series) {
    for (const ChartPoint& p : series.points) {
      if (Finite(p)) return true;
    }
  }
  return false;
}

std::string RenderXyChart(const XyChart& chart) {
  double x_lo = std::numeric_limits<double>::infinity();
  double x_hi = -x_lo;
  double y_lo = x_lo;
  double y_hi = -x_lo;
  for (const ChartSeries& series : chart.series) {
    for (const ChartPoint& p : series.points) {
      if (!Finite(p)) continue;
      x_lo = std::min(x_lo, p.x);
      x_hi = std::max(x_hi, p.x);
      y_lo = std::min(y_lo, p.y);
      y_hi = std::max(y_hi, p.y);
    }
  }
  const bool has_data = HasData(chart);
  if (!has_data) x_lo = x_hi = y_lo = y_hi = 0;
  const std::vector<double> x_ticks =
      AxisTicks(chart.x, x_lo, x_hi, kXTickCount);
  const std::vector<double> y_ticks =
      AxisTicks(chart.y, y_lo, y_hi, kYTickCount);
  const double left = kXyLeftMargin;
  const double right = chart.width - kLegendWidth;
  const double top = kPlotTop;
  const double bottom = chart.height - kXyBottomMargin;
  const Scale sx{x_ticks.front(), x_ticks.back(), left, right};
  const Scale sy{y_ticks.front(), y_ticks.back(), bottom, top};

  std::string svg = SvgOpen(chart.id, chart.width, chart.height, chart.title);
  // Grid and ticks.
  for (double t : x_ticks) {
    const std::string x = Px(sx(t));
    absl::StrAppend(&svg, "<line x1=\"", x, "\" y1=\"", Px(top), "\" x2=\"", x,
                    "\" y2=\"", Px(bottom), "\" stroke=\"", kGridColor,
                    "\"/><line x1=\"", x, "\" y1=\"", Px(bottom), "\" x2=\"", x,
                    "\" y2=\"", Px(bottom + kTickLength), "\" stroke=\"",
                    kAxisColor, "\"/><text x=\"", x, "\" y=\"",
                    Px(bottom + kXTickLabelOffset),
                    "\" text-anchor=\"middle\">", TickLabel(t), "</text>");
  }
  for (double t : y_ticks) {
    const std::string y = Px(sy(t));
    absl::StrAppend(&svg, "<line x1=\"", Px(left), "\" y1=\"", y, "\" x2=\"",
                    Px(right), "\" y2=\"", y, "\" stroke=\"", kGridColor,
                    "\"/><line x1=\"", Px(left - kTickLength), "\" y1=\"", y,
                    "\" x2=\"", Px(left), "\" y2=\"", y, "\" stroke=\"",
                    kAxisColor, "\"/><text x=\"", Px(left - kTickLength - 2),
                    "\" y=\"", y, "\" dy=\"0.35em\" text-anchor=\"end\">",
                    TickLabel(t), "</text>");
  }
  // Axes and their labels.
  absl::StrAppend(
      &svg, "<path d=\"M", Px(left), " ", Px(top), "V", Px(bottom), "H",
      Px(right), "\" fill=\"none\" stroke=\"", kAxisColor, "\"/>", "<text x=\"",
      Px((left + right) / 2), "\" y=\"", Px(bottom + kAxisLabelOffset),
      "\" text-anchor=\"middle\">", HtmlEscape(chart.x.label), "</text>",
      "<text transform=\"translate(", Px(left - kYAxisLabelOffset), " ",
      Px((top + bottom) / 2), ") rotate(-90)\" text-anchor=\"middle\">",
      HtmlEscape(chart.y.label), "</text>");
  if (!has_data) {
    absl::StrAppend(&svg, "<text x=\"", Px((left + right) / 2), "\" y=\"",
                    Px((top + bottom) / 2), "\" text-anchor=\"middle\" fill=\"",
                    kMutedTextColor, "\">no data</text>");
  }
  // The data.
  for (const ChartSeries& series : chart.series) {
    const std::string color = HtmlEscape(series.color);
    if (series.style != ChartSeries::Style::kPoints) {
      // One polyline per run of finite points.
      std::string coords;
      const auto flush = [&] {
        if (coords.find(' ') != std::string::npos) {
          absl::StrAppend(&svg,
                          "<polyline class=\"mark line\" fill=\"none\" "
                          "stroke=\"",
                          color, "\" stroke-width=\"", Px(kLineWidth),
                          "\" points=\"", coords, "\"/>");
        }
        coords.clear();
      };
      for (const ChartPoint& p : series.points) {
        if (!Finite(p)) {
          flush();
          continue;
        }
        absl::StrAppend(&coords, coords.empty() ? "" : " ", Px(sx(p.x)), ",",
                        Px(sy(p.y)));
      }
      flush();
    }
    if (series.style != ChartSeries::Style::kLine) {
      for (const ChartPoint& p : series.points) {
        if (!Finite(p)) continue;
        absl::StrAppend(&svg, "<circle class=\"mark point\" cx=\"", Px(sx(p.x)),
                        "\" cy=\"", Px(sy(p.y)), "\" r=\"", Px(kPointRadius),
                        "\" fill=\"", color, "\">", Title(p.tooltip),
                        "</circle>");
      }
    }
  }
  // The legend, right of the plot.
  const double legend_x = right + kLegendSwatchWidth;
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const ChartSeries& series = chart.series[i];
    const double y = top + kLegendRowHeight * (i + 0.5);
    const std::string color = HtmlEscape(series.color);
    absl::StrAppend(&svg, "<g class=\"legend\">");
    if (series.style != ChartSeries::Style::kPoints) {
      absl::StrAppend(&svg, "<line x1=\"", Px(legend_x), "\" y1=\"", Px(y),
                      "\" x2=\"", Px(legend_x + kLegendSwatchWidth), "\" y2=\"",
                      Px(y), "\" stroke=\"", color, "\" stroke-width=\"",
                      Px(kLineWidth), "\"/>");
    }
    if (series.style != ChartSeries::Style::kLine) {
      absl::StrAppend(&svg, "<circle cx=\"",
                      Px(legend_x + kLegendSwatchWidth / 2.0), "\" cy=\"",
                      Px(y), "\" r=\"", Px(kPointRadius), "\" fill=\"", color,
                      "\"/>");
    }
    absl::StrAppend(&svg, "<text x=\"", Px(legend_x + kLegendSwatchWidth + 6),
                    "\" y=\"", Px(y), "\" dy=\"0.35em\">",
                    HtmlEscape(ShortenBack(series.name, kMaxLegendChars)),
                    Title(series.name), "</text></g>");
  }
  absl::StrAppend(&svg, "</svg>");
  return svg;
}

std::string RenderBarChart(const BarChart& chart) {
  size_t longest = 0;
  for (const Bar& bar : chart.bars) {
    longest =
        std::max(longest, ShortenFront(bar.label, kMaxBarLabelChars).size());
  }
  const double left =
      std::max<double>(
          kMinBarLabelWidth,
          static_cast<double>(std::min(longest, kMaxBarLabelChars) *
                              kPixelsPerLabelChar)) +
      kTickLength * 2;
  const double right = chart.width - kBarRightMargin;
  const double top = kPlotTop;
  const double bottom =
      top + kBarRowHeight *
                static_cast<double>(std::max<size_t>(chart.bars.size(), 1));
  const int height = static_cast<int>(bottom) + kBarBottomMargin;
  double hi = 0;
  for (const Bar& bar : chart.bars) {
    if (std::isfinite(bar.value)) hi = std::max(hi, bar.value);
  }
  ChartAxis axis;
  axis.integer_ticks = chart.integer_ticks;
  axis.min = 0;
  if (chart.max.has_value()) axis.max = chart.max;
  const std::vector<double> ticks =
      AxisTicks(axis, 0, hi > 0 ? hi : 1, kXTickCount);
  const Scale sx{ticks.front(), ticks.back(), left, right};

  std::string svg = SvgOpen(chart.id, chart.width, height, chart.title);
  for (double t : ticks) {
    const std::string x = Px(sx(t));
    absl::StrAppend(&svg, "<line x1=\"", x, "\" y1=\"", Px(top), "\" x2=\"", x,
                    "\" y2=\"", Px(bottom), "\" stroke=\"", kGridColor,
                    "\"/><text x=\"", x, "\" y=\"",
                    Px(bottom + kXTickLabelOffset),
                    "\" text-anchor=\"middle\">", TickLabel(t), "</text>");
  }
  absl::StrAppend(&svg, "<path d=\"M", Px(left), " ", Px(top), "V", Px(bottom),
                  "H", Px(right), "\" fill=\"none\" stroke=\"", kAxisColor,
                  "\"/><text x=\"", Px((left + right) / 2), "\" y=\"",
                  Px(bottom + kAxisLabelOffset), "\" text-anchor=\"middle\">",
                  HtmlEscape(chart.value_label), "</text>");
  if (chart.bars.empty()) {
    absl::StrAppend(&svg, "<text x=\"", Px((left + right) / 2), "\" y=\"",
                    Px((top + bottom) / 2),
                    "\" dy=\"0.35em\" "
                    "text-anchor=\"middle\" fill=\"",
                    kMutedTextColor, "\">no data</text>");
  }
  for (size_t i = 0; i < chart.bars.size(); ++i) {
    const Bar& bar = chart.bars[i];
    const double row_top = top + kBarRowHeight * static_cast<double>(i);
    const double middle = row_top + kBarRowHeight / 2.0;
    const double value = std::isfinite(bar.value) ? bar.value : 0;
    const double end = sx(std::clamp(value, ticks.front(), ticks.back()));
    const std::string tooltip =
        bar.tooltip.empty() ? bar.label
                            : absl::StrCat(bar.label, ": ", bar.tooltip);
    absl::StrAppend(
        &svg, "<text x=\"", Px(left - kTickLength * 2), "\" y=\"", Px(middle),
        "\" dy=\"0.35em\" text-anchor=\"end\">",
        HtmlEscape(ShortenFront(bar.label, kMaxBarLabelChars)),
        Title(bar.label), "</text><rect class=\"mark bar\" x=\"", Px(left),
        "\" y=\"", Px(middle - kBarHeight / 2.0), "\" width=\"",
        Px(std::max(0.0, end - left)), "\" height=\"", kBarHeight, "\" fill=\"",
        HtmlEscape(bar.color), "\">", Title(tooltip), "</rect><text x=\"",
        Px(end + kBarValueGap), "\" y=\"", Px(middle), "\" dy=\"0.35em\">",
        TickLabel(value), "</text>");
  }
  absl::StrAppend(&svg, "</svg>");
  return svg;
}

}  // namespace mixq::client
