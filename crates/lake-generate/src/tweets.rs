//! Tweets (seed 000): a stable user population with heavy-tailed follower
//! counts and Zipf-like activity, Zipf-like hashtag popularity with a few
//! trending tags that change every hour of event time, text built from the
//! user's language data in the `fake` crate.

use fake::locales::{AR_SA, DE_DE, Data, EN, FR_FR, IT_IT, JA_JP, NL_NL, PT_BR, TR_TR, ZH_CN};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};
use serde::Serialize;

use crate::faults::InvalidKind;
use crate::shape::{self, TimestampFormat, Weighted, Zipf, heavy_tail, normal};

/// Fields a malformed tweet may carry a wrong type in.
pub(crate) const NUMERIC_FIELDS: &[&str] = &[
    "engagement_score",
    "retweet_count",
    "like_count",
    "hashtags",
];
/// Fields a malformed tweet may lack.
pub(crate) const REQUIRED_FIELDS: &[&str] = &["tweet_id", "created_at"];

/// The quality rules an invalid tweet may break.
const INVALID_KINDS: [InvalidKind; 4] = [
    InvalidKind::SentimentOutOfRange,
    InvalidKind::NegativeCount,
    InvalidKind::TimeBefore2006,
    InvalidKind::TimeInFuture,
];

const TOPICS: &[&str] = &[
    "AI",
    "Music",
    "WorldCup",
    "Crypto",
    "Climate",
    "Election",
    "Gaming",
    "Movies",
    "Tech",
    "Startups",
    "Rust",
    "DataEngineering",
    "Football",
    "NBA",
    "Fashion",
    "Travel",
    "Food",
    "Science",
    "Space",
    "Health",
    "Fitness",
    "Books",
    "Art",
    "Photography",
    "Cars",
    "Weather",
    "Markets",
    "Bitcoin",
    "Olympics",
    "Tennis",
    "Cricket",
    "Anime",
    "Kpop",
    "Netflix",
    "Apple",
    "Android",
    "Linux",
    "OpenSource",
    "Cloud",
    "Security",
    "Privacy",
    "Education",
    "Jobs",
    "Remote",
    "Coffee",
    "Cats",
    "Dogs",
    "Nature",
    "Concert",
    "Festival",
];
const TOPIC_SUFFIXES: &[&str] = &["", "2026", "News", "Live", "Daily", "Life", "Fans", "Talk"];

/// One language: its share of users, its words, its names, where it is spoken.
struct Language {
    code: &'static str,
    weight: u32,
    words: Vec<&'static str>,
    separator: &'static str,
    first_names: &'static [&'static str],
    last_names: &'static [&'static str],
    countries: &'static [(&'static str, &'static str, u32)],
}

fn language<L: Data>(
    code: &'static str,
    weight: u32,
    separator: &'static str,
    countries: &'static [(&'static str, &'static str, u32)],
) -> Language {
    // Every word list the locale carries: lorem words, and its job, company
    // and place vocabulary, which are in the locale's language where fake
    // translates them.
    let mut words: Vec<&'static str> = Vec::new();
    for list in [
        L::LOREM_WORD,
        L::JOB_FIELD,
        L::JOB_POSITION,
        L::COMPANY_BS_VERBS,
        L::COMPANY_BS_ADJ,
        L::COMPANY_BS_NOUNS,
        L::COMPANY_BUZZWORD_MIDDLE,
        L::ADDRESS_STATE,
    ] {
        words.extend(list.iter().flat_map(|w| w.split_whitespace()));
    }
    Language {
        code,
        weight,
        words,
        separator,
        first_names: L::NAME_FIRST_NAME,
        last_names: L::NAME_LAST_NAME,
        countries,
    }
}

fn languages() -> Vec<Language> {
    vec![
        language::<EN>(
            "en",
            45,
            " ",
            &[
                ("United States", "North America", 50),
                ("United Kingdom", "Europe", 15),
                ("India", "Asia", 12),
                ("Canada", "North America", 8),
                ("Australia", "Oceania", 6),
                ("Nigeria", "Africa", 6),
                ("South Africa", "Africa", 3),
            ],
        ),
        // fake has no Spanish locale: Spanish speakers write with English data.
        language::<EN>(
            "es",
            12,
            " ",
            &[
                ("Spain", "Europe", 30),
                ("Mexico", "North America", 30),
                ("Argentina", "South America", 20),
                ("Colombia", "South America", 20),
            ],
        ),
        language::<PT_BR>(
            "pt",
            8,
            " ",
            &[("Brazil", "South America", 80), ("Portugal", "Europe", 20)],
        ),
        language::<FR_FR>(
            "fr",
            7,
            " ",
            &[
                ("France", "Europe", 70),
                ("Canada", "North America", 15),
                ("Senegal", "Africa", 15),
            ],
        ),
        language::<DE_DE>(
            "de",
            6,
            " ",
            &[
                ("Germany", "Europe", 75),
                ("Austria", "Europe", 15),
                ("Switzerland", "Europe", 10),
            ],
        ),
        language::<IT_IT>("it", 4, " ", &[("Italy", "Europe", 100)]),
        language::<NL_NL>(
            "nl",
            3,
            " ",
            &[("Netherlands", "Europe", 70), ("Belgium", "Europe", 30)],
        ),
        language::<TR_TR>("tr", 3, " ", &[("Turkey", "Asia", 100)]),
        language::<AR_SA>(
            "ar",
            4,
            " ",
            &[
                ("Saudi Arabia", "Asia", 40),
                ("Egypt", "Africa", 40),
                ("United Arab Emirates", "Asia", 20),
            ],
        ),
        language::<JA_JP>("ja", 5, " ", &[("Japan", "Asia", 100)]),
        language::<ZH_CN>(
            "zh",
            3,
            "",
            &[("China", "Asia", 80), ("Singapore", "Asia", 20)],
        ),
    ]
}

struct User {
    id: String,
    username: String,
    display_name: String,
    followers: i64,
    verified: bool,
    language: usize,
    country: usize,
}

/// The tweet stream's state: who exists, what is popular, what is trending.
pub(crate) struct TweetModel {
    languages: Vec<Language>,
    users: Vec<User>,
    activity: Zipf,
    hashtags: Vec<String>,
    popularity: Zipf,
    seed: u64,
    trending_hour: Option<i64>,
    trending: Vec<usize>,
    format: TimestampFormat,
    text: String,
    created_at: String,
    tags: Vec<usize>,
    mentions: Vec<usize>,
    id: [u8; 36],
}

#[derive(Serialize)]
struct UserOut<'a> {
    user_id: &'a str,
    username: &'a str,
    display_name: &'a str,
    followers_count: i64,
    verified: bool,
}

#[derive(Serialize)]
struct TweetOut<'a> {
    tweet_id: &'a str,
    text: &'a str,
    user: UserOut<'a>,
    created_at: &'a str,
    hashtags: Tags<'a>,
    mentions: Mentions<'a>,
    lang: &'a str,
    region: &'a str,
    country: &'a str,
    sentiment_score: f64,
    engagement_score: i64,
    retweet_count: i64,
    like_count: i64,
}

struct Tags<'a>(&'a [usize], &'a [String]);
struct Mentions<'a>(&'a [usize], &'a [User]);

impl Serialize for Tags<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|&i| self.1[i].as_str()))
    }
}

impl Serialize for Mentions<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|&i| self.1[i].username.as_str()))
    }
}

impl TweetModel {
    /// Builds the user population and hashtag vocabulary from `seed` alone,
    /// so fault settings never change who the users are.
    pub fn new(seed: u64, user_count: usize) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x7457_6565_7473);
        let languages = languages();
        let language_picker = Weighted::new(languages.iter().map(|l| l.weight));
        let country_pickers: Vec<Weighted> = languages
            .iter()
            .map(|l| Weighted::new(l.countries.iter().map(|c| c.2)))
            .collect();
        let users = (0..user_count.max(1))
            .map(|n| {
                let language = language_picker.sample(&mut rng);
                let lang = &languages[language];
                let first = lang.first_names[rng.random_range(0..lang.first_names.len())];
                let last = lang.last_names[rng.random_range(0..lang.last_names.len())];
                let followers = heavy_tail(&mut rng, 150.0, 1.15).min(150_000_000.0) as i64;
                let verified = if followers > 100_000 {
                    rng.random_bool(0.7)
                } else {
                    rng.random_bool(0.002)
                };
                let id = shape::uuid(&mut rng);
                User {
                    id: String::from_utf8_lossy(&id).into_owned(),
                    username: format!("{}{}", ascii_handle(first), n),
                    display_name: format!("{first} {last}"),
                    followers,
                    verified,
                    language,
                    country: country_pickers[language].sample(&mut rng),
                }
            })
            .collect::<Vec<_>>();
        let mut hashtags = Vec::new();
        for suffix in TOPIC_SUFFIXES {
            for topic in TOPICS {
                hashtags.push(format!("{topic}{suffix}"));
            }
        }
        // Deterministic shuffle so popularity is not alphabetical.
        for i in (1..hashtags.len()).rev() {
            let j = rng.random_range(0..=i);
            hashtags.swap(i, j);
        }
        Self {
            activity: Zipf::new(users.len(), 0.8),
            popularity: Zipf::new(hashtags.len(), 1.07),
            languages,
            users,
            hashtags,
            seed,
            trending_hour: None,
            trending: Vec::new(),
            format: TimestampFormat::default(),
            text: String::with_capacity(256),
            created_at: String::with_capacity(32),
            tags: Vec::with_capacity(4),
            mentions: Vec::with_capacity(4),
            id: [0; 36],
        }
    }

    /// Five mid-popularity tags trend in each hour of event time.
    fn trending_for(&mut self, micros: i64) -> &[usize] {
        let hour = micros.div_euclid(3_600_000_000);
        if self.trending_hour != Some(hour) {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(
                self.seed ^ (hour as u64).wrapping_mul(0x9E37_79B9),
            );
            self.trending = (0..5)
                .map(|_| rng.random_range(30..self.hashtags.len().min(300)))
                .collect();
            self.trending_hour = Some(hour);
        }
        &self.trending
    }

    /// Writes one tweet as JSON into `out`; returns the user id (the key).
    pub fn write<'a>(
        &'a mut self,
        rng: &mut impl Rng,
        event_micros: i64,
        invalid: Option<InvalidKind>,
        out: &mut Vec<u8>,
    ) -> &'a str {
        let author = self.activity.sample(rng);
        self.id = shape::uuid(rng);

        self.tags.clear();
        let tag_count = match rng.random_range(0..100u8) {
            0..20 => 0,
            20..65 => 1,
            65..90 => 2,
            _ => 3,
        };
        if tag_count > 0 && rng.random_bool(0.25) {
            let trending = self.trending_for(event_micros);
            let pick = trending[rng.random_range(0..trending.len())];
            self.tags.push(pick);
        }
        while self.tags.len() < tag_count {
            let tag = self.popularity.sample(rng);
            if !self.tags.contains(&tag) {
                self.tags.push(tag);
            }
        }
        self.mentions.clear();
        let mention_count = match rng.random_range(0..10u8) {
            0..6 => 0,
            6..9 => 1,
            _ => 2,
        };
        for _ in 0..mention_count {
            let other = self.activity.sample(rng);
            if other != author {
                self.mentions.push(other);
            }
        }

        let user = &self.users[author];
        let language = &self.languages[user.language];
        let lang = if rng.random_bool(0.95) {
            language.code
        } else {
            "en"
        };
        self.text.clear();
        for n in 0..rng.random_range(5..17) {
            if n > 0 {
                self.text.push_str(language.separator);
            }
            self.text
                .push_str(language.words[rng.random_range(0..language.words.len())]);
        }
        for &tag in &self.tags {
            self.text.push_str(" #");
            self.text.push_str(&self.hashtags[tag]);
        }
        for &m in &self.mentions {
            self.text.push_str(" @");
            self.text.push_str(&self.users[m].username);
        }

        let mut sentiment = (0.1 + 0.45 * normal(rng)).clamp(-1.0, 1.0);
        sentiment = (sentiment * 1000.0).round() / 1000.0;
        let reach = (user.followers as f64 * 0.02 + 1.0) * (0.8 * normal(rng)).exp();
        let mut likes = reach.min(5_000_000.0) as i64;
        let retweets = (likes as f64 * rng.random_range(0.0..0.3)) as i64;
        let replies = rng.random_range(0..(likes / 10 + 2));
        let mut micros = event_micros;
        match invalid {
            Some(InvalidKind::SentimentOutOfRange) => {
                sentiment =
                    rng.random_range(1.1..3.0) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            }
            Some(InvalidKind::NegativeCount) => likes = -rng.random_range(1..1000),
            Some(InvalidKind::TimeBefore2006) => {
                // Some time in 2001–2005.
                micros = rng.random_range(978_307_200_000_000..1_136_073_600_000_000);
            }
            Some(InvalidKind::TimeInFuture) => {
                // Far enough ahead that no clock has reached it.
                micros = rng.random_range(4_102_444_800_000_000..4_133_980_800_000_000);
            }
            _ => {}
        }
        let engagement = likes.max(0) + 2 * retweets + replies;
        self.created_at.clear();
        self.format.write(micros, &mut self.created_at);
        let (country, region, _) = language.countries[user.country];
        let tweet = TweetOut {
            tweet_id: std::str::from_utf8(&self.id).unwrap_or_default(),
            text: &self.text,
            user: UserOut {
                user_id: &user.id,
                username: &user.username,
                display_name: &user.display_name,
                followers_count: user.followers,
                verified: user.verified,
            },
            created_at: &self.created_at,
            hashtags: Tags(&self.tags, &self.hashtags),
            mentions: Mentions(&self.mentions, &self.users),
            lang,
            region,
            country,
            sentiment_score: sentiment,
            engagement_score: engagement,
            retweet_count: retweets,
            like_count: likes,
        };
        // Writing to a Vec cannot fail and the types always serialize.
        let _ = serde_json::to_writer(&mut *out, &tweet);
        &self.users[author].id
    }

    pub fn invalid_kind(rng: &mut impl Rng) -> InvalidKind {
        INVALID_KINDS[rng.random_range(0..INVALID_KINDS.len())]
    }
}

/// A handle-safe ASCII rendering of a name (`Zoë` → `zo`, `山田` → `user`).
fn ascii_handle(name: &str) -> String {
    let handle: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if handle.is_empty() {
        "user".into()
    } else {
        handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tweets_have_the_seed_shape() {
        let mut model = TweetModel::new(42, 2000);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut out = Vec::new();
        let mut langs = std::collections::HashSet::new();
        for i in 0..500 {
            out.clear();
            let key = model
                .write(&mut rng, 1_767_225_600_000_000 + i * 1000, None, &mut out)
                .to_string();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["user"]["user_id"], key);
            assert_eq!(v["tweet_id"].as_str().unwrap().len(), 36);
            let s = v["sentiment_score"].as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&s));
            assert!(v["engagement_score"].as_i64().unwrap() >= 0);
            for tag in v["hashtags"].as_array().unwrap() {
                assert!(
                    v["text"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("#{}", tag.as_str().unwrap()))
                );
            }
            langs.insert(v["lang"].as_str().unwrap().to_string());
        }
        assert!(langs.len() >= 6, "{langs:?}");
    }
}
