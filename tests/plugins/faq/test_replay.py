"""1,000 customer messages over many conversations with the lexical matcher: no conversation gets the same
reply twice, whatever the customers write (the knowledge base's phrasings, numbers, "that is not what I
asked", thanks, off-topic questions), and every conversation ends answered or with a person.

The conversation logic runs as in the plugin (:class:`plugins.faq.dialogue.Dialogue`, the state going
through JSON between turns as through the plugin's store), without a desk, to stay fast."""

from __future__ import annotations

import json
import random
from collections import Counter

from plugins.faq.dialogue import Dialogue
from plugins.faq.intents import HandoverIntents, IntentRecogniser
from plugins.faq.knowledge import load
from plugins.faq.loader import build
from plugins.faq.locales import load_locales
from plugins.faq.policy import ConversationState, Policy
from tests.plugins.faq.conftest import SAMPLE

FOLLOW_UPS = [
    "1",
    "2",
    "3",
    "0",
    "第二个",
    "that is not what I asked",
    "That's not it",
    "不是这个",
    "thanks",
    "谢谢",
    "👍",
    "ok",
    "do you sell kayak poles?",
    "你们是人工智能吗",
    "my order number is 12345",
]


def messages(rng: random.Random, questions: list[str]) -> list[str]:
    """One conversation: questions (sometimes lower case, without punctuation, or asked again) and follow-ups."""
    out: list[str] = []
    for _ in range(rng.randint(2, 9)):
        roll = rng.random()
        if roll < 0.45:
            text = rng.choice(questions)
            out.append(text.lower().rstrip("?？") if rng.random() < 0.3 else text)
        elif roll < 0.55 and out:
            out.append(rng.choice(out))  # the same message again
        else:
            out.append(rng.choice(FOLLOW_UPS))
    return out


def test_a_thousand_messages_never_get_the_same_reply_twice_in_a_conversation() -> None:
    locales = load_locales()
    intents = HandoverIntents.build(locales)
    loaded = build(str(SAMPLE))
    recogniser = IntentRecogniser.fit("lexical", loaded.kb.examples(), intents.examples())
    dialogue = Dialogue(loaded, locales, intents, Policy(), recogniser=recogniser)
    questions = [q for entry in load(SAMPLE).entries.values() for q in entry.questions]
    rng = random.Random(17)
    sent = conversations = 0
    outcomes: Counter[str] = Counter()
    while sent < 1000:
        conversations += 1
        stored = json.dumps(ConversationState().to_json())
        replies: list[str] = []
        handed_over = False
        for text in messages(rng, questions):
            state = ConversationState.from_json(json.loads(stored))
            turn = dialogue.turn(state, text)
            stored = json.dumps(state.to_json())
            sent += 1
            if turn.reply is not None:
                replies.append(turn.reply)
            if turn.handover:
                outcomes[turn.handover] += 1
                handed_over = True
                break  # queued: the bot is silent from now on
        else:
            outcomes["still with the bot"] += 1
        assert len(replies) == len(set(replies)), (conversations, replies)
        if not handed_over:  # still with the bot: never at a limit
            state = ConversationState.from_json(json.loads(stored))
            assert state.failed_in_a_row < 2 and state.failed < 3, (conversations, state)
    assert sent >= 1000 and conversations > 150
    assert outcomes["repeat"] + outcomes["unanswered"] > 0 and outcomes["still with the bot"] > 0, outcomes
    print(f"{sent} messages, {conversations} conversations: {dict(outcomes)}")
