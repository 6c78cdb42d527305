"""A seeded pool of varied English sentences in the text normal form, for synthesising speech corpora.

Numbers, dates and times are written out as words, so the text says exactly what the synthesiser speaks.
"""

from __future__ import annotations

import random
import re

FIRST_NAMES = tuple(
    """
james mary robert patricia john jennifer michael linda david elizabeth william barbara richard susan joseph
jessica thomas sarah charles karen daniel lisa matthew nancy anthony betty mark sandra donald margaret steven
ashley paul kimberly andrew emily joshua donna kenneth michelle kevin carol brian amanda george melissa timothy
deborah ronald stephanie jason rebecca edward sharon jeffrey laura ryan cynthia jacob kathleen gary amy nicholas
angela eric shirley jonathan anna stephen brenda larry pamela justin emma scott nicole brandon helen benjamin
samantha samuel katherine gregory christine alexander debra frank rachel patrick carolyn raymond janet jack
catherine dennis maria jerry heather tyler diane aaron ruth jose julie adam olivia henry joyce nathan virginia
douglas victoria zachary kelly peter lauren kyle christina oliver sophie lucas grace oscar chloe hugo alice
""".split()
)
LAST_NAMES = tuple(
    """
smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez gonzalez wilson
anderson thomas taylor moore jackson martin lee perez thompson white harris sanchez clark ramirez lewis robinson
walker young allen king wright scott torres nguyen hill flores green adams nelson baker hall rivera campbell
mitchell carter roberts gomez phillips evans turner diaz parker cruz edwards collins reyes stewart morris morales
murphy cook rogers gutierrez ortiz morgan cooper peterson bailey reed kelly howard ramos kim cox ward richardson
watson brooks chavez wood james bennett gray mendoza ruiz hughes price alvarez castillo sanders patel myers long
ross foster jimenez powell jenkins perry russell sullivan bell coleman butler henderson barnes fisher vasquez
""".split()
)
NOUNS = tuple(
    """
apple table window garden kitchen letter river mountain bridge station ticket bottle basket blanket candle
chair clock coffee computer cookie doctor engine farmer flower forest friend guitar hammer island jacket ladder
lemon library machine market mirror money morning needle notebook ocean orange painter pencil pepper piano
picture pillow planet pocket potato queen rabbit radio record ribbon rocket sandwich school shadow shoulder
signal silver sister soldier spoon student summer sunset teacher telephone theater tiger tomato tower train
umbrella valley village violin wagon wallet water weather wheel winter wizard yellow zebra airport answer
artist baby bakery balloon banana bank battery beach bicycle bird blossom boat book bread brother bucket
building butter button cabin camera captain carpet castle cat ceiling cheese chicken church circle city cloud
coat college corner cottage country cousin cow crowd cup curtain customer dinner dog door dragon drawer dream
driver eagle egg elephant envelope evening factory family feather fence field finger fire fish flag floor
fountain fox game gate gift glass glove goat gold grass group hall harbor hat heart hill holiday honey horse
hospital hotel house hunter idea island jar jewel journey judge key king kite knife lake lamp lawyer leaf
lesson lion lock magazine map meadow meeting message minute moon mother mouse museum music nail neighbor
nest newspaper night nurse office onion owl package page paper parcel parent park party passenger path pearl
pen people pie pilot plate pond post prince princess problem puzzle question rain ring road robot roof room
rope rose sailor salad sand scarf sea season secret shelf ship shirt shoe shop singer sky snow song sound
soup spring square stair star stone storm story street sugar sun supper table tail tea team tent thunder
toast tool town toy tree truck tunnel turtle uncle vase wall whale whistle wind wolf woman worker yard
""".split()
)
ADJECTIVES = tuple(
    """
small large little big old young new ancient modern bright dark quiet loud gentle angry happy sad brave calm
clever curious eager famous friendly funny gentle golden green heavy hungry lazy lucky lovely narrow noisy
polite proud quick rapid rich round shiny short silly simple slow smooth soft strange strong sweet tall tiny
warm wild wise wooden yellow blue red purple orange silver empty full fresh frozen hidden honest perfect
pretty secret sharp sleepy sticky sunny thick thin tired wet windy busy careful cheerful cold cool crowded
delicious distant dusty early easy elegant enormous fancy fierce foggy fragile gigantic graceful grumpy
handsome helpful humble icy jolly juicy kind late lonely magic messy mighty muddy nervous nice odd plain
precious rare rough rusty salty scary shallow shy silent sour spicy splendid steady stormy tender tidy
""".split()
)
VERBS = tuple(
    pair.split(":")
    for pair in """
see:saw take:took make:made find:found give:gave bring:brought build:built buy:bought carry:carried
catch:caught choose:chose clean:cleaned climb:climbed close:closed cook:cooked cut:cut draw:drew drop:dropped
fix:fixed follow:followed hold:held keep:kept lift:lifted like:liked love:loved move:moved need:needed
open:opened paint:painted pick:picked play:played pull:pulled push:pushed read:read sell:sold send:sent
share:shared show:showed sign:signed start:started stop:stopped teach:taught throw:threw touch:touched
visit:visited want:wanted wash:washed watch:watched wear:wore write:wrote borrow:borrowed check:checked
count:counted deliver:delivered discover:discovered enjoy:enjoyed explain:explained fill:filled greet:greeted
hide:hid invite:invited join:joined kick:kicked lose:lost mend:mended notice:noticed order:ordered pack:packed
plant:planted prepare:prepared protect:protected question:questioned remember:remembered repair:repaired
return:returned save:saved search:searched study:studied trust:trusted wrap:wrapped
""".split()
)
PLACES = tuple(
    """
the park|the station|the market|the library|the kitchen|the garden|the office|the beach|the harbor|the museum
|the hospital|the airport|the school|the bakery|the village|the city|the forest|the mountains|the river bank
|the old church|the town hall|the hotel lobby|the city center|the football field|the train platform
|the coffee shop|the post office|the bus stop|the farm|the castle|the cinema|the zoo|the bridge|the valley
|london|paris|berlin|madrid|rome|tokyo|chicago|boston|denver|seattle|toronto|sydney|dublin|vienna|oslo|cairo
|mexico city|new york|san francisco|los angeles|amsterdam|lisbon|prague|athens|moscow|beijing|mumbai|lagos
""".replace("\n", "").split("|")
)
TIMES = (
    "today",
    "yesterday",
    "tomorrow",
    "this morning",
    "this evening",
    "last night",
    "next week",
    "last year",
    "on monday",
    "on tuesday",
    "on wednesday",
    "on thursday",
    "on friday",
    "on saturday",
    "on sunday",
    "in the afternoon",
    "at noon",
    "at midnight",
    "every day",
    "twice a week",
    "before dinner",
    "after lunch",
    "in january",
    "in february",
    "in march",
    "in april",
    "in may",
    "in june",
    "in july",
    "in august",
    "in september",
    "in october",
    "in november",
    "in december",
    "later",
    "soon",
    "once again",
    "right now",
)
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
ORDINALS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
    "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
).split()
ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split()
)
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
UNITS = (
    "dollars",
    "euros",
    "pounds",
    "miles",
    "kilometers",
    "people",
    "books",
    "minutes",
    "hours",
    "days",
    "years",
    "apples",
    "tickets",
    "pages",
    "meters",
    "degrees",
    "percent",
    "boxes",
    "cars",
    "songs",
)


def number_words(n: int) -> str:
    """0 <= n < 1,000,000 in British-style words ('four hundred and six')."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    rest = n % 1000
    head = number_words(n // 1000) + " thousand"
    if rest == 0:
        return head
    return head + (" and " if rest < 100 else " ") + number_words(rest)


def ordinal_words(n: int) -> str:
    """1 <= n <= 31."""
    if n <= 20:
        return ORDINALS[n - 1]
    if n % 10 == 0:
        return "thirtieth"
    return TENS[n // 10] + " " + ORDINALS[n % 10 - 1]


def year_words(year: int) -> str:
    if 2000 <= year < 2010:
        return "two thousand" + ("" if year == 2000 else " and " + ONES[year - 2000])
    high, low = divmod(year, 100)
    return number_words(high) + " " + ("hundred" if low == 0 else number_words(low) if low >= 10 else "oh " + ONES[low])


def clock_words(hour: int, minute: int) -> str:
    if minute == 0:
        return f"{number_words(hour)} o'clock"
    if minute < 10:
        return f"{number_words(hour)} oh {ONES[minute]}"
    return f"{number_words(hour)} {number_words(minute)}"


def _person(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.4:
        return rng.choice(FIRST_NAMES)
    if roll < 0.6:
        return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    if roll < 0.7:
        return f"{rng.choice(('mister', 'missus', 'doctor', 'professor'))} {rng.choice(LAST_NAMES)}"
    return f"{rng.choice(('the', 'my', 'our', 'a', 'her', 'his'))} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"


def _thing(rng: random.Random) -> str:
    article = rng.choice(("the", "a", "my", "your", "their", "this", "that", "every", "one"))
    if rng.random() < 0.5:
        return f"{article} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    return f"{article} {rng.choice(NOUNS)}"


def _template(rng: random.Random) -> str:
    verb, past = rng.choice(VERBS)
    person, thing, place, time = _person(rng), _thing(rng), rng.choice(PLACES), rng.choice(TIMES)
    count = rng.choice((rng.randint(2, 20), rng.randint(21, 999), rng.randint(1000, 99999)))
    day, month = rng.randint(1, 28), rng.choice(MONTHS)
    templates = (
        f"{person} {past} {thing} {time}",
        f"{person} {past} {thing} near {place}",
        f"{person} will {verb} {thing} at {place} {time}",
        f"please {verb} {thing} before {clock_words(rng.randint(1, 12), rng.randint(0, 59))}",
        f"did {person} {verb} {thing} {time}",
        f"why did you {verb} {thing} at {place}",
        f"we need {number_words(count)} {rng.choice(UNITS)} by {time.removeprefix('on ').removeprefix('in ')}",
        f"the meeting is on the {ordinal_words(day)} of {month} {year_words(rng.randint(1950, 2030))}",
        f"{person} was born on {month} {ordinal_words(day)} {year_words(rng.randint(1920, 2020))}",
        f"the train leaves at {clock_words(rng.randint(1, 12), rng.randint(0, 59))} from {place}",
        f"it costs {number_words(count)} {rng.choice(('dollars', 'euros', 'pounds'))} "
        f"and {number_words(rng.randint(1, 99))} cents",
        f"there are {number_words(count)} {rng.choice(UNITS)} in {thing}",
        f"i think {person} is {rng.choice(ADJECTIVES)} and {rng.choice(ADJECTIVES)}",
        f"can you {verb} {thing} for {person}",
        f"{person} and {_person(rng)} went to {place} {time}",
        f"the {rng.choice(NOUNS)} is {rng.choice(ADJECTIVES)} {time}",
        f"call {rng.choice(FIRST_NAMES)} at {' '.join(ONES[rng.randint(0, 9)] for _ in range(rng.randint(4, 7)))}",
        f"room {number_words(rng.randint(1, 999))} is on the {ordinal_words(rng.randint(1, 20))} floor",
        f"don't {verb} {thing} {time}",
        f"have you ever seen {thing} at {place}",
        f"{person} said that {_person(rng)} {past} {thing}",
        f"when will {person} {verb} {thing}",
        f"after {rng.choice(('breakfast', 'lunch', 'dinner', 'work', 'school'))} we {past} {thing} at {place}",
    )
    return rng.choice(templates)


def normalize_text(text: str) -> str:
    """Lowercase letters, apostrophes and single spaces: the form of every training target."""
    text = re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " "))
    return " ".join(text.split())


def sentence_pool(count: int, seed: int, exclude: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """`count` distinct normalised sentences, none of them in `exclude`, the same for the same seed."""
    rng = random.Random(seed)
    seen: set[str] = set(exclude)
    pool: list[str] = []
    attempts = 0
    while len(pool) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(f"could not find {count} distinct sentences")
        sentence = normalize_text(_template(rng))
        if sentence not in seen:
            seen.add(sentence)
            pool.append(sentence)
    return pool
