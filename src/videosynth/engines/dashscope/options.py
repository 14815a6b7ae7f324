"""The dashscope relay's options (``[models."..."]`` keys with ``engine = "dashscope"``)."""

from __future__ import annotations

from videosynth.engines.options import Option

OPTIONS = (
    Option(
        "base_url",
        str,
        help="the upstream API, ending in /api/v1 (e.g. https://dashscope.aliyuncs.com/api/v1)",
    ),
    Option("model", str, "", "the upstream's model name (empty: the public name of this model)"),
    Option(
        "api_key_env",
        str,
        "DASHSCOPE_API_KEY",
        "the environment variable holding the upstream key (the key itself is never written anywhere)",
    ),
    Option("request_timeout_s", float, 30.0, "timeout of one upstream request", minimum=0.1),
    Option("poll_first_s", float, 5.0, "delay before the first status poll", minimum=0.01),
    Option(
        "poll_max_s",
        float,
        15.0,
        "longest delay between polls (the hosted service suggests 15 s)",
        minimum=0.01,
    ),
    Option(
        "give_up_after_s",
        float,
        600.0,
        "how long the upstream may answer 5xx, be unreachable, or not know a task before the task fails",
        minimum=0,
    ),
    Option("download_timeout_s", float, 600.0, "deadline for downloading one result", minimum=1),
    Option("max_video_mb", float, 1024.0, "largest result accepted", minimum=0.001),
    Option(
        "inline_max_mb",
        float,
        5.0,
        "references we hold (data:, oss://) up to this size go upstream as data: URLs, larger ones through"
        " the upstream's upload flow (0: always upload)",
        minimum=0,
    ),
    Option(
        "result_hosts",
        str,
        "",
        "comma-separated hosts whose result links may resolve to private addresses (an upstream on the"
        " same network); every other link is held to the media fetching rules",
    ),
    Option(
        "list_timezone",
        str,
        "Asia/Shanghai",
        "the time zone of the upstream's task-list time filters (to find a submit whose answer was lost)",
    ),
    Option("clock_skew_s", float, 5.0, "how far the upstream's clock may be from ours", minimum=0),
)
