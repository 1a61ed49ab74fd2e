"""Corpus loaders on tiny fixtures in each real format, and on the real data where present."""
from collections import Counter

import pandas as pd
import pytest
import soundfile as sf

from components.labels import NO_AGREEMENT
from components.paths import resolve_audio_path
from components.prepare.loaders import LOADERS, load_corpus
from components.prepare.loaders.cremad import load_cremad
from components.prepare.loaders.emodb import load_emodb
from components.prepare.loaders.iemocap import load_iemocap
from components.prepare.loaders.msp_podcast import load_msp_podcast
from components.prepare.loaders.ravdess import load_ravdess
from components.prepare.records import CorpusLayoutError
from tests.conftest import require_shared
from tests.corpus_fixtures import (
    CREMAD_CLIPS, EMODB_FILES, RAVDESS_EMOTIONS, CremadClip, ravdess_name, write_cremad_fixture,
    write_emodb_fixture, write_iemocap_fixture, write_msp_podcast_fixture,
    write_ravdess_fixture, write_tone,
)


def by_id(loaded):
    return {u.utt_id: u for u in loaded.utterances}


def assert_sorted_with_existing_audio(loaded, root):
    ids = [u.utt_id for u in loaded.utterances]
    assert ids == sorted(ids)
    for utt in loaded.utterances:
        assert sf.info(str(resolve_audio_path(utt.audio_path, root))).frames > 0


# ---------------------------------------------------------------------------------- registry

def test_registry_names_every_corpus_loader():
    assert set(LOADERS) == {"ravdess", "cremad", "msp_podcast", "iemocap", "emodb"}


def test_load_corpus_rejects_an_unknown_corpus_and_option(tmp_path):
    with pytest.raises(ValueError, match="no loader for corpus 'savee'.*cremad.*ravdess"):
        load_corpus("savee", tmp_path)
    with pytest.raises(ValueError, match="'ravdess' does not take option.*audio_dir"):
        load_corpus("ravdess", write_ravdess_fixture(tmp_path), audio_dir=tmp_path)


def test_load_corpus_passes_options(tmp_path):
    root = write_cremad_fixture(tmp_path, with_audio=False)
    loaded = load_corpus("cremad", str(root), audio_dir=root / "wav16k")
    assert loaded.utterances[0].audio_path == "wav16k/1001_DFA_ANG_XX.wav"


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_loader_refuses_an_empty_or_missing_folder(tmp_path, name):
    with pytest.raises(CorpusLayoutError, match=name):
        load_corpus(name, tmp_path)
    with pytest.raises(CorpusLayoutError, match="does not exist"):
        load_corpus(name, tmp_path / "absent")


# ---------------------------------------------------------------------------------- RAVDESS

def test_ravdess_fixture_rows(tmp_path):
    root = write_ravdess_fixture(tmp_path / "ravdess", actors=(1, 2), sample_rate=48000)
    loaded = load_ravdess(root)
    assert loaded.problems == []
    assert len(loaded.utterances) == 2 * len(RAVDESS_EMOTIONS)
    assert_sorted_with_existing_audio(loaded, root)
    utt = by_id(loaded)["03-01-05-01-01-01-02"]
    assert utt.audio_path == "Actor_02/03-01-05-01-01-01-02.wav"
    assert (utt.speaker, utt.gender) == ("Actor_02", "female")
    assert utt.votes == [("intended", "05")] and utt.consensus_code == "05"
    assert utt.transcript == "Kids are talking by the door"
    assert utt.split is None
    male = by_id(loaded)["03-01-04-01-02-01-01"]
    assert (male.speaker, male.gender) == ("Actor_01", "male")
    assert male.transcript == "Dogs are sitting by the door"


def test_ravdess_notes_bad_names_and_songs_and_passes_unknown_codes(tmp_path):
    root = write_ravdess_fixture(tmp_path, actors=(3,), emotions=("01",))
    write_tone(root / "Actor_03" / "notes.wav")
    write_tone(root / "Actor_03" / ravdess_name("03", 3, channel=2))  # song
    write_tone(root / "Actor_03" / ravdess_name("09", 3, statement=3), channels=2)
    loaded = load_ravdess(root)
    assert [u.utt_id for u in loaded.utterances] == ["03-01-01-01-01-01-03", "03-01-09-01-03-01-03"]
    odd = loaded.utterances[1]
    assert odd.consensus_code == "09" and odd.transcript is None
    assert loaded.problems == [
        "ravdess: skipped Actor_03/notes.wav: name is not MM-VV-EE-II-SS-RR-AA.wav",
        "ravdess: left out 1 song file(s) (vocal channel 02); speech only",
    ]


def test_ravdess_keeps_the_first_of_a_repeated_clip(tmp_path):
    root = write_ravdess_fixture(tmp_path, actors=(5,), emotions=("02",))
    write_tone(root / "copies" / ravdess_name("02", 5, statement=2))
    loaded = load_ravdess(root)
    assert [u.audio_path for u in loaded.utterances] == ["Actor_05/03-01-02-01-02-01-05.wav"]
    assert "appears twice" in loaded.problems[0]


# ---------------------------------------------------------------------------------- CREMA-D

def test_cremad_fixture_rows_use_voice_only_votes(tmp_path):
    root = write_cremad_fixture(tmp_path / "crema")
    loaded = load_cremad(root)
    assert loaded.problems == []
    assert [u.utt_id for u in loaded.utterances] == sorted(c.name for c in CREMAD_CLIPS)
    assert_sorted_with_existing_audio(loaded, root)
    angry = by_id(loaded)["1001_DFA_ANG_XX"]
    assert angry.votes == [
        ("voice_vote_01", "A"), ("voice_vote_02", "A"), ("voice_vote_03", "A"),
        ("voice_vote_04", "A"), ("voice_vote_05", "A"), ("voice_vote_06", "A"),
        ("voice_vote_07", "D"), ("voice_vote_08", "D"), ("voice_vote_09", "N"),
    ]
    assert angry.consensus_code == "A"
    assert (angry.speaker, angry.gender) == ("1001", "male")
    assert angry.audio_path == "AudioWAV/1001_DFA_ANG_XX.wav"
    assert angry.transcript == "Don't forget a jacket"
    tie = by_id(loaded)["1002_IEO_HAP_LO"]
    assert Counter(code for _, code in tie.votes) == {"H": 3, "N": 3}
    assert tie.consensus_code == NO_AGREEMENT == ""
    assert (tie.gender, tie.transcript) == ("female", "It's eleven o'clock")
    assert by_id(loaded)["1004_ITH_DIS_MD"].transcript == "I think I have a doctor's appointment"


def test_cremad_does_not_need_audio(tmp_path):
    root = write_cremad_fixture(tmp_path, with_audio=False)
    loaded = load_cremad(root)
    assert len(loaded.utterances) == len(CREMAD_CLIPS)
    assert not (root / loaded.utterances[0].audio_path).exists()


def test_cremad_notes_bad_rows_and_unknown_actors(tmp_path):
    clips = CREMAD_CLIPS[:2] + (CremadClip("1099_TSI_NEU_XX", {"N": 4}),)
    root = write_cremad_fixture(tmp_path, clips=clips, with_audio=False)
    table_path = root / "processedResults" / "tabulatedVotes.csv"
    table = pd.read_csv(table_path, dtype=str, keep_default_na=False)
    table.loc[0, "fileName"] = "clip one"
    table.loc[1, "numResponses"] = "12"
    table.to_csv(table_path, index=False)
    loaded = load_cremad(root)
    assert [u.utt_id for u in loaded.utterances] == ["1001_IEO_NEU_XX", "1099_TSI_NEU_XX"]
    assert by_id(loaded)["1099_TSI_NEU_XX"].gender == "unknown"
    assert loaded.problems == [
        "cremad: skipped 'clip one': not ActorID_Sentence_Emotion_Level",
        "cremad: 1001_IEO_NEU_XX: numResponses is 12 but the counts add up to 11; kept the counts",
        "cremad: actor(s) 1099 not in VideoDemographics.csv; gender unknown",
    ]


def test_cremad_layout_errors(tmp_path):
    root = write_cremad_fixture(tmp_path / "crema", with_audio=False)
    with pytest.raises(CorpusLayoutError, match="outside the data folder"):
        load_cremad(root, audio_dir=tmp_path / "elsewhere")
    (root / "VideoDemographics.csv").unlink()
    with pytest.raises(CorpusLayoutError, match="missing .*VideoDemographics.csv"):
        load_cremad(root)


# ------------------------------------------------------------------------------ MSP-Podcast

@pytest.mark.parametrize("detailed", ["csv", "csv_columns", "json", "json_list"])
def test_msp_podcast_fixture_rows(tmp_path, detailed):
    root = write_msp_podcast_fixture(tmp_path / "msp", detailed=detailed)
    loaded = load_msp_podcast(root)
    assert_sorted_with_existing_audio(loaded, root)
    rows = by_id(loaded)
    assert list(rows) == [
        "MSP-PODCAST_0001_0008", "MSP-PODCAST_0001_0011", "MSP-PODCAST_0002_0003",
        "MSP-PODCAST_0003_0020", "MSP-PODCAST_0004_0001",
    ]
    angry = rows["MSP-PODCAST_0001_0008"]
    assert angry.votes == [("WORKER00012", "Angry"), ("WORKER00031", "Angry"),
                           ("WORKER00044", "Other")]
    assert (angry.consensus_code, angry.split) == ("A", "train")
    assert (angry.speaker, angry.gender) == ("127", "male")
    assert angry.audio_path == "Audios/MSP-PODCAST_0001_0008.wav"
    assert angry.transcript == "I told you not to touch that."
    repeated = rows["MSP-PODCAST_0001_0011"]
    assert repeated.votes == [("WORKER00012", "Neutral"), ("WORKER00031", "Sad"),
                              ("WORKER00050", "Happy")]
    assert repeated.transcript is None
    unknown = rows["MSP-PODCAST_0002_0003"]
    assert (unknown.speaker, unknown.gender, unknown.split) == ("Unknown", "unknown", "dev")
    assert unknown.consensus_code == "X"
    assert rows["MSP-PODCAST_0003_0020"].split == rows["MSP-PODCAST_0004_0001"].split == "test"
    assert rows["MSP-PODCAST_0003_0020"].gender == "female"
    assert loaded.problems == [
        "msp_podcast: MSP-PODCAST_0001_0011: rater WORKER00050 rated twice (Neutral, Happy); "
        "kept the last",
        "msp_podcast: folded 1 'Other-<text>' rating(s) into 'Other'",
    ]


def test_msp_podcast_without_detailed_labels_and_with_audio_folder(tmp_path):
    root = write_msp_podcast_fixture(tmp_path, detailed=None, audio_folder="Audio")
    loaded = load_msp_podcast(root)
    assert all(u.votes == [] for u in loaded.utterances)
    assert loaded.utterances[0].audio_path == "Audio/MSP-PODCAST_0001_0008.wav"
    assert loaded.problems == [
        "msp_podcast: no Labels/labels_detailed.csv or .json; utterances have no per-rater votes"
    ]


def test_msp_podcast_notes_unreadable_ratings_unknown_files_and_splits(tmp_path):
    root = write_msp_podcast_fixture(tmp_path)
    consensus = root / "Labels" / "labels_consensus.csv"
    consensus.write_text(consensus.read_text().replace('"Test2"', '"Holdout"'))
    with (root / "Labels" / "labels_detailed.csv").open("a") as f:
        f.write('"MSP-PODCAST_0001_0008.wav","WORKER00099"\n')
        f.write('"MSP-PODCAST_0009_0001.wav","WORKER00012; Sad; Sad; A:2.0; V:2.0; D:2.0;"\n')
    loaded = load_msp_podcast(root)
    assert by_id(loaded)["MSP-PODCAST_0004_0001"].split is None
    assert "unknown Split_Set 'Holdout'" in loaded.problems[2]
    assert "skipped an unreadable rating of MSP-PODCAST_0001_0008.wav" in loaded.problems[0]
    assert "ratings for 1 file(s) not in the consensus table" in loaded.problems[3]
    assert len(by_id(loaded)["MSP-PODCAST_0001_0008"].votes) == 3


def test_msp_podcast_layout_errors(tmp_path):
    root = write_msp_podcast_fixture(tmp_path)
    (root / "Audios").rename(root / "wavs")
    with pytest.raises(CorpusLayoutError, match="expected Audios/ or Audio/"):
        load_msp_podcast(root)
    (root / "wavs").rename(root / "Audios")
    (root / "Labels" / "labels_consensus.csv").write_text("FileName,EmoClass\nx.wav,N\n")
    with pytest.raises(CorpusLayoutError, match="lacks column.*SpkrID"):
        load_msp_podcast(root)


# ---------------------------------------------------------------------------------- IEMOCAP

def test_iemocap_fixture_rows(tmp_path):
    root = write_iemocap_fixture(tmp_path / "IEMOCAP_full_release")
    loaded = load_iemocap(root)
    assert loaded.problems == ["iemocap: folded 1 free-text 'Other' vote(s) into 'Other'"]
    assert_sorted_with_existing_audio(loaded, root)
    rows = by_id(loaded)
    assert sorted(rows) == [
        "Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M000",
        "Ses02M_script01_1_F000", "Ses02M_script01_1_M000",
    ]
    frustrated = rows["Ses01F_impro01_M000"]
    assert frustrated.votes == [("E1", "Frustration"), ("E2", "Anger"), ("E3", "Frustration")]
    assert frustrated.consensus_code == "fru"
    assert (frustrated.speaker, frustrated.gender) == ("Ses01_M", "male")
    assert frustrated.audio_path == "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M000.wav"
    assert frustrated.transcript == "Do you have your forms?"
    no_agreement = rows["Ses01F_impro01_F001"]
    assert no_agreement.votes == [("E1", "Neutral"), ("E2", "Sadness"), ("E4", "Other")]
    assert no_agreement.consensus_code == "xxx" and no_agreement.transcript is None
    scripted = rows["Ses02M_script01_1_F000"]
    assert (scripted.speaker, scripted.gender) == ("Ses02_F", "female")
    assert scripted.votes == [("E1", "Sadness"), ("E3", "Sadness")]  # not the actor's Neutral
    assert scripted.audio_path == (
        "Session2/sentences/wav/Ses02M_script01_1/Ses02M_script01_1_F000.wav"
    )
    assert rows["Ses02M_script01_1_M000"].votes[1] == ("E2", "Excited")


def test_iemocap_notes_lines_it_cannot_read(tmp_path):
    root = write_iemocap_fixture(tmp_path)
    evaluation = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    text = evaluation.read_text().replace("Ses01F_impro01_F001", "turn_F001")
    text = text.replace("C-E3:\tNeutral;\t()", "C-E3:\t\t()\nsomething odd\nC-E2:\tSadness;\t()")
    evaluation.write_text(text)
    (evaluation.parent / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07")
    loaded = load_iemocap(root)
    assert "turn_F001" not in by_id(loaded)
    assert by_id(loaded)["Ses01F_impro01_F000"].votes == [("E2", "Sadness"), ("E4", "Neutral")]
    where = "iemocap: Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    assert loaded.problems == [
        f"{where}: Ses01F_impro01_F000: evaluator E3 gave no category",
        f"{where} line 6: not understood, skipped: 'something odd'",
        f"{where}: Ses01F_impro01_F000: evaluator E2 rated twice; kept the last",
        f"{where}: skipped turn_F001: id is not SesNN<F|M>_<dialog>_<F|M>NNN",
    ]  # the utterance holding the 'Other:annoyed' vote was skipped, so nothing was folded


def test_iemocap_needs_the_audio_folder(tmp_path):
    root = write_iemocap_fixture(tmp_path)
    (root / "Session2" / "sentences" / "wav").rename(root / "Session2" / "sentences" / "audio")
    with pytest.raises(CorpusLayoutError, match="Session2 has evaluations but no audio folder"):
        load_iemocap(root)


# ----------------------------------------------------------------------------------- EmoDB

@pytest.mark.parametrize("in_wav_folder", [True, False])
def test_emodb_fixture_rows(tmp_path, in_wav_folder):
    root = write_emodb_fixture(tmp_path / "emodb", in_wav_folder=in_wav_folder)
    loaded = load_emodb(root)
    assert loaded.problems == []
    assert [u.utt_id for u in loaded.utterances] == sorted(EMODB_FILES)
    assert_sorted_with_existing_audio(loaded, root)
    happy = by_id(loaded)["03a01Fa"]
    assert happy.audio_path == ("wav/03a01Fa.wav" if in_wav_folder else "03a01Fa.wav")
    assert (happy.speaker, happy.gender) == ("03", "male")
    assert happy.votes == [("intended", "F")] and happy.consensus_code == "F"
    assert happy.transcript == "Der Lappen liegt auf dem Eisschrank."
    sad = by_id(loaded)["09b03Ta"]
    assert (sad.gender, sad.consensus_code) == ("female", "T")
    assert sad.transcript == (
        "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht."
    )
    assert by_id(loaded)["10a04Lb"].transcript == "Heute abend könnte ich es ihm sagen."


def test_emodb_notes_bad_names_and_keeps_unknown_speakers_and_texts(tmp_path):
    root = write_emodb_fixture(tmp_path, names=("03a01Fa", "99c42Qa"))
    write_tone(root / "wav" / "recording.wav")
    loaded = load_emodb(root)
    odd = by_id(loaded)["99c42Qa"]
    assert (odd.gender, odd.transcript, odd.consensus_code) == ("unknown", None, "Q")
    assert loaded.problems == ["emodb: skipped wav/recording.wav: name is not SSTTTEV.wav"]


# -------------------------------------------------------------------------------- real data

@pytest.mark.realdata
def test_real_ravdess_dev():
    loaded = load_ravdess(require_shared("ravdess-dev"))
    assert loaded.problems == []
    assert len(loaded.utterances) == 720
    speakers = {u.speaker: u.gender for u in loaded.utterances}
    assert len(speakers) == 12
    assert Counter(speakers.values()) == {"female": 6, "male": 6}
    assert {u.consensus_code for u in loaded.utterances} == set(RAVDESS_EMOTIONS)
    assert Counter(u.consensus_code for u in loaded.utterances)["01"] == 48


@pytest.mark.realdata
def test_real_cremad_voice_only_tables():
    root = require_shared("cremad-labels")
    loaded = load_cremad(root)
    assert loaded.problems == []  # every row parses and numResponses equals the vote counts
    assert len(loaded.utterances) == 7442
    speakers = {u.speaker: u.gender for u in loaded.utterances}
    assert len(speakers) == 91
    assert Counter(speakers.values()) == {"male": 48, "female": 43}
    assert all(4 <= len(u.votes) <= 12 for u in loaded.utterances)
    assert sum(u.consensus_code == NO_AGREEMENT for u in loaded.utterances) == 644
    assert all(u.transcript for u in loaded.utterances)
    first = by_id(loaded)["1001_IEO_NEU_XX"]
    assert Counter(code for _, code in first.votes) == {"N": 10, "H": 1}
    assert (first.consensus_code, first.gender) == ("N", "male")
