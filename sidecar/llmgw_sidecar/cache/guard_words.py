"""Word lists of the `opposites` guard (kept apart from the guard logic so they can grow without clutter).

Each group lists poles; a pole is a space-separated set of words (or known two-word phrases) meaning the same thing.
Two questions that both use a group, but on different poles or in a different order, ask different things.
"""

from __future__ import annotations

OPPOSITE_GROUPS: list[list[str]] = [
    ["max maximum largest biggest highest most greatest tallest longest", "min minimum smallest lowest least "
     "shortest tiniest"],
    ["more", "less fewer"], ["increase increases raise raising grow", "decrease decreases reduce lower lowering shrink"],
    ["advantage pro benefit upside", "disadvantage con drawback downside"], ["before prior", "after"],
    ["first earliest beginning", "last latest final"], ["best", "worst"], ["above over", "below under"],
    ["buy buying purchase", "sell selling"], ["import importing", "export exporting"],
    ["encrypt encryption", "decrypt decryption"], ["encode encoding", "decode decoding"],
    ["compress compression", "decompress decompression"], ["add adding insert", "remove removing delete deleting"],
    ["enable enabling turn on", "disable disabling turn off"], ["install installing", "uninstall uninstalling"],
    ["push", "pull"], ["upload", "download"], ["north northern", "south southern"], ["east eastern", "west western"],
    ["hot hotter hottest warm warmer warmest", "cold colder coldest cool cooler coolest"],
    ["up rise rising rises", "down fall falling falls drop dropping"], ["fast faster quick quicker speed up", "slow slower"],
    ["cheap cheaper cheapest inexpensive", "expensive pricier costly"], ["safe safely", "unsafe dangerous harmful"],
    ["legal", "illegal"], ["true", "false"], ["start starting begin", "stop stopping end"], ["open", "close closing"],
    ["win winning", "lose losing"], ["love", "hate"], ["positive", "negative"], ["left", "right"],
    ["inside inner internal", "outside outer external"], ["ascending", "descending"],
    ["oldest older", "newest newer youngest younger"], ["input", "output"],
    ["client", "server"], ["private", "public"], ["synchronous sync", "asynchronous async"],
    ["mean average", "median", "mode"], ["mass", "weight"], ["speed", "velocity"], ["affect", "effect"],
    ["latitude", "longitude"], ["stack", "queue"], ["tcp", "udp"], ["process", "thread"], ["list", "tuple"],
    ["union", "intersection"], ["http", "https"], ["ipv4", "ipv6"], ["sum", "product"], ["width", "height"],
    ["rows row", "columns column"], ["virus viral", "bacteria bacterial"], ["weather", "climate"],
    ["boil boiling", "freeze freezing melt"], ["sunrise", "sunset"], ["husband", "wife"], ["male man", "female woman"],
    ["morning", "evening night"], ["summer", "winter"], ["spring", "autumn fall"], ["herbivore", "carnivore"],
    ["mitosis", "meiosis"], ["dna", "rna"], ["acid acidic", "base basic alkaline"],
    ["vertical vertically", "horizontal horizontally"], ["uppercase upper case", "lowercase lower case"],
    ["singular", "plural"], ["past", "future"], ["yesterday", "today tonight", "tomorrow"],
    ["last week", "this week", "next week"], ["last month", "this month", "next month"],
    ["last year", "this year", "next year"], ["synonym", "antonym"], ["beginner novice", "expert advanced"],
    ["kid child children", "adult grown-up"], ["in into", "out"], ["lend lending", "borrow borrowing"], ["debit", "credit"],
]

