"""Regenerate tests/fixtures/eval/{ptb_java_cases,caption_corpora}.json by running pycocoevalcap 1.2
(``pip install pycocoevalcap==1.2``: its PTBTokenizer runs the bundled stanford-corenlp-3.4.1.jar, so it
needs ``java``; Cider and Bleu are Python).

    python scripts/make_scoring_fixtures_captions.py [--lines 2000] [--single 300]

* ptb_java_cases.json: random + adversarial captions tokenised in one PTBTokenizer call, as
  pycocoevalcap tokenises a corpus (a caption's end can depend on the next line), and a few hundred
  tokenised alone (one call each: the end of the file follows them).
* caption_corpora.json: corpora (COCO-like, punctuation-heavy, mixed reference counts, one image) with
  pycocoevalcap's tokenisation of references and candidates, Cider() and Bleu(4) scores, corpus and per
  image.
Without pycocoevalcap or java it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
R = random.Random(7)


def _words(text: str) -> list[str]:
    return text.split("|")


# ---- caption material: plain words, then everything the PTB lexer has a rule for ----------------------
WORDS = (
    "a an the man woman dog dogs cat people person riding sitting standing table kitchen street bus train "
    "plate pizza sandwich tennis player ball field grass snow water beach surfboard wave sky clock tower "
    "building car truck bike motorcycle horse elephant giraffe zebra bear bird boat airplane laptop phone "
    "red white blue green black yellow large small two three several group of on in at with near next to "
    "is are holding looking playing eating flying walking top front side middle while it its this that "
    "colour centre grey theatre organise ok yes no not all some very"
).split()
STARTS = _words(
    "A|The|An|Two|He|She|It|In|At|There|This|They|We|You|About|According|After|As|But|However|If|Many|More|"
    "Mr.|Ms.|Now|One|Our|So|Some|Such|That|Their|Then|These|When|While|What|Yet|Once|Other|Last|Since|Here|"
    'Her|Earlier|Additionally|<b>|a|the|1|3|"A|(The|'
)
ABBREVIATIONS = _words(
    "Mr.|Mrs.|Ms.|Dr.|Prof.|St.|Ste.|Ave.|Blvd.|Rd.|Mt.|Ft.|Jr.|Sr.|Co.|Corp.|Inc.|Ltd.|Pty.|vs.|etc.|"
    "e.g.|i.e.|"
    "U.S.|U.K.|U.S.A.|a.m.|p.m.|A.M.|Ph.D.|Ed.D|No.|no.|fig.|Fig.|figs.|ca.|art.|pp.|op.|Jan.|Feb.|Sept.|"
    "Mon.|"
    "Tues.|Calif.|Mass.|Miss.|Ind.|Kan.|Kans.|Tex.|Wash.|Pa.|La.|Ill.|Gen.|Col.|Capt.|Sgt.|Rev.|Hon.|Dept.|"
    "Univ.|Assn.|Bros.|Esq.|est.|tel.|sq.|al.|seq.|Bldg.|bldg.|Alex.|Wm.|Cie.|a.k.a.|cf.|Ph.|TREAS.|Mfg.|"
    "Natl.|"
    "Elec.|A.|I.|X.|b.|Z.|J.R.R.|non-U.S.|U.S.-U.K.|Canada-U.S.|cont'd|cont'd.|Pte.|pty.|Co.,|Jr.,|ft.|oz.|"
    "lb.|Sat.|Sun.|May.|St|Mr|Dr"
)
NUMBERS = _words(
    "5|3.5|1,000|10,000,000|2015|5th|21st|1/2|3/4|1 1/2|3\\/4|12/25/2015|1-2-99|3-4|10:30|3:30:15|50%|$5|"
    "$5.99|"
    "US$5|US$|#1|+5|-3|-3.5|'90s|'90|'99|.5|0.25|1.|2015.|5,|(555) 123-4567|555-123-4567|555 1234|"
    "+1 555 123 4567|123.456.7890|1st.|20-30|1990s|1,5|3\u00a01/2|1\u20442|\u00bd|\u00bc|\u00be|\u2153|"
    "\u2155|"
    "\u00b2|x\u00b2|H\u2082O|\u2070|\u00b9\u00b2|\u0663|\u0661\u066b\u0665|\uff11\uff12|12\u00ad34|\u00a3100|"
    "\u20ac10|\u00a5100|\u00a2|50\u00a2|\u20a4|\u0e3f5|7\u2009000"
)
CONTRACTIONS = _words(
    "don't|can't|won't|it's|he's|I'm|you're|they've|we'll|I'd|dog's|dogs'|ain't|y'all|Y'all|o'clock|O'Neill|"
    "rock 'n' roll|rock'n'roll|jack-o'-lantern|'em|'tis|'Tis|'twas|'Twas|cannot|Cannot|CANNOT|gonna|wanna|"
    "gotta|lemme|gimme|wannabe|cannots|don\u2019t|it\u2019s|I\u2019m|dog\u2019s|can`t|don\u2018t|isn&apos;t|"
    "it&apos;s|d'Artagnan|l'amour|Dunkin'|somethin'|ol'|'cause|'til|'till|c'mon|e'er|s'mores|ev'ry|li'l|"
    "nat'l|nor'easter|O'o|Cap'n|c'est|'s|'S|'re|'ll|'d|'ve|n't|N'T|DON'T|It'S|children's|James'|'90s'|"
    "shi'ite|b'gosh|y'know|ma'am|Ma'am|don'ts|couldn't've|hadn't|Don\u2019t"
)
HYPHENATED = _words(
    "well-known|t-shirt|T-shirt|x-ray|X-ray|3-year-old|co-op|e-mail|anti-war|pro-choice|pro-|anti-|"
    "self-driving|two-and-a-half|U.S.-based|A-1|red-and-white|-LRB-|-RRB-|-LCB-|-lrb-|C.D.s|S&P-500|"
    "S&amp;P-500|S&Ls|A&P|AT&T|AT&amp;T|R&D.|Q&A|A+B|C++|c++|C#|f#|F#|G#|red/white|black/white/grey|and/or|"
    "A/C|w/o|km/h|1/2-inch|up-to-date|a--b|well--known|x_y|snake_case|under_score|dog\u2010cat|dog\u2011cat|"
    "dog\u058acat|soft\u00adhyphen|\u00ad|O'Neill-Smith|d'oh-d'oh|co-op.|x-ray.|ex-U.S.-based"
)
QUOTES = _words(
    "\"|'|\u201c|\u201d|\u2018|\u2019|\u201a|\u201e|\u201f|\u201b|\u00ab|\u00bb|\u2039|\u203a|``|''|`|&quot;|"
    "&apos;|\u0091|\u0092|\u0093|\u0094"
)
PUNCTUATION = _words(
    ",|.|!|?|;|:|...|..|....|.....|......|. . .|.\u00a0.\u00a0.|?!|!!|???|!?|-|--|---|----|-----|(|)|[|]|"
    "{|}|/|"
    "\\|*|**|\\*|\\*\\*|&|%|$|#|##|@|@@|+|=|<|>|<<|>>|~|^|_|__|\u2026|\u2013|\u2014|\u2015|\u2022|\u00b7|"
    "\u00a1|"
    "\u00bf|\u3002|\u3001|\u00a7|\u00b6|\u00a9|\u00ae|\u2122|\u2192|\u00b0|\u00d7|\u00f7|\u221e|\u2020|"
    "\u2030|"
    "\u00a6|\u00a8|\u00af|\u00ac|\u0387|\u037e|\u061f|\u06d4|\u0964|&amp;|&lt;|&gt;|&nbsp;|&mdash;|"
    "&ndash;|&MD;|"
    "&#123;|&HT;|&odq;|&eacute;|&Uuml;|&aacute;|\u0096|\u0097|\u0085|\u0080|\x7f|\x00|\uff01|\uff08|\uff09|"
    "\u30fb|\u2044"
) + ["|"]
URLS = _words(
    "http://www.example.com|https://example.com/a/b?c=d&e=f.|http://x.org/path-|www.example.com|"
    "www.example.co.uk/x|example.com|example.com/index.html|cnn.com.|Example.COM|foo.bar.edu/~me|a.b.net|"
    "x1.com|http://t.co/abc)|ftp://x.com|me@example.com|first.last@sub.example.org|<me@example.com>|"
    "&lt;me@x.com&gt;|@user|@user_1|#hashtag|#tag1|#\u00e9t\u00e9|photo.jpg|file.txt|a.b.c|image.PNG|"
    "script.py,|notes.doc.|x.c|v1.2.3|http://a.com/\U0001f600x|me\U0001f600@x.com|www.x.com/caf\u00e9"
)
SMILEYS = _words(
    ":)|:-)|;)|:(|:D|:P|:p|=)|:o)|<3|>:(|:'(|:]|:[|:\\|:{|:@|^_^|o_O|O_o|-_-|x_x|^.^|(^_^)|(^-^)|(-_-)|(>_<)|"
    "^.[^x=~<>]|(x_x)"
)
MARKUP = _words(
    "<b>|</b>|<br/>|<br />|<a href=\"x\">|<p class='y'>|<!-- c -->|<?xml v?>|<i >|< b>|<1>|<a b c>|<x:y>"
)
UNICODE = _words(
    "caf\u00e9|cafe\u0301|na\u00efve|\u00fcber|Stra\u00dfe|\u00c5ngstr\u00f6m|se\u00f1or|\u00c0|"
    "\u00e9t\u00e9|"
    "\u732b|\u6771\u4eac|\u3042\u308a\u304c\u3068\u3046|\uac00\ub098|\u0645\u0631\u062d\u0628\u0627|"
    "\u05e9\u05dc\u05d5\u05dd|\u0928\u092e\u0938\u094d\u0924\u0947|\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35|"
    "\u041f\u0440\u0438\u0432\u0435\u0442|\u039f\u0394\u039f\u03a3|\u03a3\u03a3|\u0130stanbul|\u0131|\u1e9e|"
    "\u01c5|\ufb01|\u2160|\U0001f600|\U0001f44d\U0001f3fd|\U0001f1fa\U0001f1f8|\u2764\ufe0f|\u200b|"
    "\u200c|\u200d|"
    "\u200e|\ufeff|\u2060|\u00a0|\u2009|\u3000|\u180e|\u1680|\u205f|\x1c|\x1f|\u0301|\u0237|\u024f|\u02c6|"
    "\u0300|\u0483|\u0591|\u064b|\u0900|\u093c|\u0e31|\u0eb1|\u2c65|\ua7c0|\u9fcd|\u08a0|\u0220|\u1d00|"
    "\U00010400|\U0001d400|\u212a|\u017f|K\u212a|\uff21\uff22|\u02b0|\u3005|\u16ee|\u2163|\u1885|\u0de6|"
    "\u2c2f|\U00010570"
)
EXTRA = _words(
    "colour|COLOUR|I|i|A|THE|U.S|US|u.s|AM|PM|OK|O.K.|etc|vs|Mr|x|X|Z|Co|co|pty|ltd|Ltd|lim|*NL*|&|&&"
)
CATEGORIES = [(WORDS, 40), (ABBREVIATIONS, 6), (NUMBERS, 6), (CONTRACTIONS, 6), (HYPHENATED, 5),
              (PUNCTUATION, 8), (URLS, 3), (SMILEYS, 2), (MARKUP, 1), (UNICODE, 5), (EXTRA, 3)]  # fmt: skip
POOL = [words for words, weight in CATEGORIES for _ in range(weight)]
ENDINGS = _words(
    ".|.|.| .|!|?|...| ||.  |. |,|:)| :)|'90| A.| U.S.| fig.| etc.| file.txt| 'll|\"|'| I.| x.c|;)|(|:-)"
)
ADVERSARIAL = _words(
    "red/white sign|a (big) dog|50% off|$5 and #1|in 2015.|the dog 's bone|"
    "\u201cquoted\u201d \u2014 dash\u2026 end|"
    "cannot wanna gonna|the '90s|rock 'n' roll|jack-o'-lantern|Ph.D. student|see http://www.x.com/a?b=1.|"
    "what?!|\u00bd cup|a photo \U0001f600 of|zero\u200bwidth|| |...|A.|I.|letter A.|The dog|U.S. The|"
    "U.S. the|"
    "I. The|fig. 3|fig.\u00a03|Fig. 3|no. 5|No. 5|Pty. Ltd|Co. Ltd|co. lim|etc. The|etc. the|etc.|Inc. A|"
    "Inc.<b>|U.S.<b>|A. <b>|Jan. 5|JAN. The|Mr. Smith|Mr Smith|MR. SMITH|Gen. X|x. A|it's|IT'S|it\u2019s|"
    "dog's.|y'all|Y'ALL|o'clock|O'CLOCK|'90s|in '99|in '99.|:)|:) x|:)x|:-) |(:|\u00bd|1 1/2 cups|3 1/2|"
    '(555) 123-4567|+1 555 123 4567|a.b.c.d|A.B.C.D.|3:30|p.m|a.m. The|e.g., the|i.e. The|vs. the|"hi"|'
    "\"Hi\" he said|' hi '|'hi'|''hi''|``hi''|&quot;hi&quot;|&amp; &AMP; &Amp;|AT&amp;T|S&amp;P-500|"
    "\u00a3 \u20ac \u00a2 \u00a5 \u0080|\u2013 \u2014 \u2015|a\u00adb|\u00ad|a\u0085b|x\x7fy|x\x00y|"
    "C.D.s|Cap'n|"
    "c'est|c++|C#|f#|#1|#tag|@me|me@x.com|x.com|www.x.com|file.txt|file.txt.|a.c|a.c.c|a.C|KM/H|5 p.m.|"
    "5 P.M.|5 P.M. The|Dr.|DR.|dr. The|St. Louis|ST. LOUIS|st louis|Ste.|\u039f\u0394\u039f\u03a3|\u03a3|"
    "\u0130|"
    "K\u212a|\u017fs|ab\u0301|\u0237x|\ud7ff|\ue000|\uffff|\U00010000|x\U0001f600y|1\u00ad2|1,000,000.|"
    "3.14159|"
    "-5|+-5|5-|--5|a -- b|a --- b|a ----- b|a - b|- a|a -|...a|a...|a....b|. . . a|a . . .|.\u00a0.\u00a0.|"
    "?!?!|!!!|a/b/c/d|1/2/3|12/25/2015|12-25-2015|1-2-3|1/2-inch|A/B-test|a\\/b|a\\*b|***|\\*\\*\\*\\*|"
    "____|@@@|"
    "###|&&|a+b|A+B+C|A&B.|<b>bold</b>|<br/>|<!DOCTYPE html>|< b >|a<b|a>b|<<a>>|a ; b|a ;b|a;b|a:b|10:30:15|"
    "a,b|1,a|a,1|\u3001|\u3002|\u00bfQu\u00e9?|\u00a1Hola!|\u061f|smile :D|smile :P|smile :p|smile :d|"
    "o_O|^_^|"
    "x_X|(^_^)|^.[^x=~<>]|^.[^X=~<>]|hello world.|Last line ends: :)|\u00a0lead|trail\u00a0|A man. A|in U.S|"
    "in the U.S|the letter I|I|a. A|a. the|a.|A. A|A. An|A. Mr. X|A. Ms. Y|Mr\u017f. Smith|Cal\u0131f. x|"
    "\u0130nc. x|c\u0131t. x|\u212aans. x| \u2009\u00a0www.example.com|elephant\u00a0white\u00a0example.com|"
    "http://x.com/\u2c2f\ua7c0|http://x.com/\U00010570"
)


LINE_BREAKS = [
    ["a\rb", "c", "d"],
    ["A dog\u2028and a cat\u2029run.", "Two birds.", "One fish.", "Last."],
    ["x\x0by", "z", "w"],
    ["p\x0cq", "r", "s"],
    ["ends in a return\r", "next", "last"],
    ["crlf\r\n inside", "next"],
    ["a\x85b", "c"],
]


def token() -> str:
    t = R.choice(R.choice(POOL))
    r = R.random()
    if r < 0.06:
        t = t.upper()
    elif r < 0.12:
        t = t.capitalize()
    if R.random() < 0.08:
        q = R.choice(QUOTES)
        t = q + t + (q if R.random() < 0.5 else R.choice(QUOTES))
    if R.random() < 0.05:
        t = R.choice("([{") + t + R.choice(")]}")
    return t


def noisy_caption() -> str:
    s = R.choice(STARTS)
    for _ in range(R.randint(0, 14)):
        s += R.choice([" "] * 12 + ["", "  ", "\t", "\u00a0"]) + token()
    if R.random() < 0.6:
        s += R.choice(ENDINGS)
    return R.choice(["", "", "", " ", "\t"]) + s if R.random() < 0.1 else s


SUBJECTS = ("a man|a woman|two dogs|a group of people|a young boy|an elephant|a cat|a plate of food|"
            "a red bus|"
            "three giraffes|a little girl|a baseball player|the kitchen|a living room|a skier").split("|"
            "")  # fmt: skip
VERBS = ("riding|sitting on|standing next to|holding|eating|looking at|walking down|playing with|flying over|"
         "parked in front of|filled with|lying on|jumping over|waiting for").split("|")  # fmt: skip
OBJECTS = ("a wave|a bench|a wooden table|the street|a frisbee|a surfboard|a laptop|a large pizza|the beach|"
           "a field of grass|a snowy hill|a busy road|a white plate|the train station").split("|"
           "")  # fmt: skip
TAILS = ("| in the park| on a sunny day|, while another watches| near the water| at night|"
         " with a red umbrella|"
         " and smiling| in front of a building| next to a stop sign| on top of a hill").split("|"
         "")  # fmt: skip
SPICE = ("man's|women's|t-shirt|3|2015|5th|U.S.|Mr.|St.|etc.|&|/|(left)|\"old\"|don't|it's|--|...|;|:|"
         "10:30|$5|50%|a.m.|letter A.|:)|NYC|O'Neill|x-ray|well-known").split("|")  # fmt: skip


def coco_caption() -> str:
    """A caption as annotators and captioning models write them: mostly words, a little punctuation."""
    words = f"{R.choice(SUBJECTS)} {R.choice(VERBS)} {R.choice(OBJECTS)}{R.choice(TAILS)}".split(" ")
    for _ in range(R.choice([0, 0, 0, 1, 1, 2])):
        words.insert(R.randint(0, len(words)), R.choice(SPICE))
    s = " ".join(words)
    s = s[0].upper() + s[1:] if R.random() < 0.8 else s
    return s + R.choice([".", ".", ".", "", " .", "!"])


def run(args: argparse.Namespace) -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    def tokenize(captions: dict) -> dict:
        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})

    lines = ADVERSARIAL + [noisy_caption() for _ in range(args.lines)]
    corpus = tokenize({i: [c] for i, c in enumerate(lines)})  # one file, one java call
    single = [noisy_caption() for _ in range(args.single)] + ADVERSARIAL[:40]
    ptb = {
        "about": "pycocoevalcap 1.2 PTBTokenizer (stanford-corenlp-3.4.1.jar -preserveLines -lowerCase, then "
        "its punctuation filter): 'corpus' in one call, line i -> tokens i; 'single' one call per caption",
        "corpus": {"captions": lines, "tokens": [corpus[i][0] for i in range(len(lines))]},
        "single": {"captions": single, "tokens": [tokenize({0: [c]})[0][0] for c in single]},
        # line breaks of the tokenizer's inside a caption shift every later caption by a line
        "line_breaks": [
            {"captions": caps, "tokens": [out[i][0] for i in range(len(caps))]}
            for caps in LINE_BREAKS
            for out in [tokenize({i: [c] for i, c in enumerate(caps)})]
        ],
    }
    (args.out / "ptb_java_cases.json").write_text(json.dumps(ptb, ensure_ascii=False, separators=(",", ":")))

    def corpus_case(name: str, gts: dict, res: dict) -> dict:
        gts_tok, res_tok = tokenize(gts), tokenize(res)
        cider, cider_per_image = Cider().compute_score(gts_tok, res_tok)
        bleu, bleu_per_image = Bleu(4).compute_score(gts_tok, res_tok, verbose=0)
        return {
            "name": name,
            "gts": gts,
            "res": res,
            "gts_tokens": gts_tok,
            "res_tokens": res_tok,
            "cider": float(cider),
            "cider_per_image": [float(x) for x in cider_per_image],
            "bleu": [float(x) for x in bleu],
            "bleu_per_image": [[float(x) for x in b] for b in bleu_per_image],
        }

    def images(n: int, caption, refs=(5, 5)) -> tuple[dict, dict]:
        gts = {str(i): [caption() for _ in range(R.randint(*refs))] for i in range(n)}
        res = {str(i): [caption() if R.random() < 0.7 else R.choice(gts[str(i)])] for i in range(n)}
        return gts, res

    mixed_gts, mixed_res = images(60, lambda: coco_caption() if R.random() < 0.5 else noisy_caption(), (1, 7))
    mixed_res["0"], mixed_res["1"] = [""], ["..."]  # candidates with no tokens left
    corpora = [
        corpus_case("coco_like", *images(150, coco_caption)),
        corpus_case("punctuation_heavy", *images(80, noisy_caption)),
        corpus_case("mixed_reference_counts", mixed_gts, mixed_res),
        corpus_case("one_image", {"7": ["A dog.", "The dog runs."]}, {"7": ["A dog runs."]}),
    ]
    caption = {
        "about": "pycocoevalcap 1.2: PTBTokenizer on references and on candidates (dict order), then Cider() "
        "and Bleu(4).compute_score, corpus and per-image scores",
        "corpora": corpora,
    }
    (args.out / "caption_corpora.json").write_text(
        json.dumps(caption, ensure_ascii=False, separators=(",", ":"))
    )
    for name in ("ptb_java_cases.json", "caption_corpora.json"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size / 1e6:.2f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--single", type=int, default=260)
    ap.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/eval")
    args = ap.parse_args()
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        print("skipped: pycocoevalcap is not installed (pip install pycocoevalcap==1.2)")
        return
    if shutil.which("java") is None:
        print("skipped: no java on PATH (pycocoevalcap's PTBTokenizer runs a jar)")
        return
    run(args)


if __name__ == "__main__":
    main()
